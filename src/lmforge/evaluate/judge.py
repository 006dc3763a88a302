"""LLM-as-judge, the logic apart from any client: the prompts, reading the verdicts, and the position swap.

A judge is any function from chat messages to the judge's text (judge_task.py makes one for an
OpenAI-compatible endpoint; tests pass a plain Python function).

- Single-answer grading (MT-bench style): the judge rates an answer 1 to 10 and ends with the rating in double
  brackets, `[[7]]`. The last such rating counts; a verdict without one is counted as unparsed and reported,
  never dropped silently or scored as a number.
- Pairwise: the judge sees the question and two answers and ends with `[[A]]`, `[[B]]` or `[[C]]` (a tie). Each
  pair is asked twice with the answers swapped, since judges favour a position: a win counts only when both
  orders pick the same answer; any disagreement is a tie, and counted as inconsistent. A pair with an
  unparseable verdict in either order is counted apart and left out of the rates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Judge = Callable[[list[dict]], str]

SYSTEM = "You are a careful, impartial judge of answers written by AI assistants."
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_CHOICE = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def single_messages(question: str, answer: str, reference: str | None = None) -> list[dict]:
    reference_part = f"[Reference answer]\n{reference}\n\n" if reference is not None else ""
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Rate the quality of the assistant's answer to the user's question: its correctness, "
            "helpfulness and precision"
            + (", compared with the reference answer" if reference is not None else "")
            + ". Explain briefly, then give the rating from 1 to 10 in double brackets as the last thing you write, "
            f"for example: Rating: [[5]]\n\n[Question]\n{question}\n\n{reference_part}"
            f"[The assistant's answer]\n{answer}",
        },
    ]


def pair_messages(question: str, answer_a: str, answer_b: str, reference: str | None = None) -> list[dict]:
    reference_part = f"[Reference answer]\n{reference}\n\n" if reference is not None else ""
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "Compare two assistants' answers to the user's question and say which is better: more "
            "correct, helpful and precise. The order of the answers must not sway you, nor their length. Explain "
            "briefly, then end with your verdict in double brackets: [[A]] if assistant A is better, [[B]] if "
            f"assistant B is better, [[C]] for a tie.\n\n[Question]\n{question}\n\n{reference_part}"
            f"[Assistant A's answer]\n{answer_a}\n\n[Assistant B's answer]\n{answer_b}",
        },
    ]


def parse_rating(verdict: str) -> float | None:
    """The last `[[N]]` with N from 1 to 10, or None."""
    found = [float(m) for m in _RATING.findall(verdict)]
    return found[-1] if found and 1 <= found[-1] <= 10 else None


def parse_choice(verdict: str) -> str | None:
    """ "A", "B" or "tie" from the last `[[A]]`, `[[B]]`, `[[C]]`, or None."""
    found = _CHOICE.findall(verdict)
    if not found:
        return None
    return "tie" if found[-1] == "C" else found[-1]


@dataclass(frozen=True)
class PairOutcome:
    outcome: str | None  # "win", "tie" or "loss" for the evaluated model; None: a verdict was unparseable
    inconsistent: bool  # the two orders disagreed (then a tie)
    verdicts: tuple[str, str]  # the judge's texts: model's answer as A, then as B


def judge_pair(judge: Judge, question: str, ours: str, theirs: str, reference: str | None = None) -> PairOutcome:
    """Both orders asked; a win or loss only when both agree (module docstring)."""
    first = judge(pair_messages(question, ours, theirs, reference))
    second = judge(pair_messages(question, theirs, ours, reference))
    picks = parse_choice(first), parse_choice(second)
    if None in picks:
        return PairOutcome(None, False, (first, second))
    as_ours = (
        {"A": "win", "B": "loss", "tie": "tie"}[picks[0]],
        {"A": "loss", "B": "win", "tie": "tie"}[picks[1]],
    )
    if as_ours[0] == as_ours[1]:
        return PairOutcome(as_ours[0], False, (first, second))
    return PairOutcome("tie", True, (first, second))


def rating_summary(ratings: list[float | None]) -> tuple[dict, dict]:
    """(metrics, counts) of single-answer grading: the mean rating of the parsed verdicts, and how many were not."""
    parsed = [r for r in ratings if r is not None]
    metrics = {"rating": round(sum(parsed) / len(parsed), 4) if parsed else None}
    return metrics, {"rows": len(ratings), "rated": len(parsed), "unparsed": len(ratings) - len(parsed)}


def pair_summary(outcomes: list[PairOutcome]) -> tuple[dict, dict]:
    """(metrics, counts) of pairwise judging: win/tie/loss rates over the pairs with both verdicts parsed."""
    decided = [o.outcome for o in outcomes if o.outcome is not None]
    n = len(decided)
    metrics = {f"{k}_rate": round(decided.count(k) / n, 4) if n else None for k in ("win", "tie", "loss")}
    counts = {
        "pairs": len(outcomes),
        "judged": n,
        "inconsistent": sum(o.inconsistent for o in outcomes),
        "unparsed": len(outcomes) - n,
    }
    return metrics, counts
