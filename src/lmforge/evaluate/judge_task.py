"""Judge tasks: the model answers each row greedily, and a judge model behind an OpenAI-compatible endpoint
(`base_url`, `judge_model`, the API key from the environment variable `api_key_env`) grades the answers, one
at a time (mode single) or against an opponent (mode pairwise: the row's `reference`, or the replies of another
model, `opponent: RUN`, loaded and answering the same way). The grading logic is judge.py's."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lmforge.errors import LmforgeError
from lmforge.evaluate.judge import Judge, judge_pair, pair_summary, parse_rating, rating_summary, single_messages
from lmforge.evaluate.rows import PromptRow, prompt_rows
from lmforge.infer.chat import generate_replies

if TYPE_CHECKING:
    from lmforge.evaluate.tasks import TaskSpec
    from lmforge.infer.load import LoadedRun


def openai_judge(
    base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", where: str = "judge", max_tokens: int = 1024
) -> Judge:
    """A judge that asks `model` at `base_url` (greedy, at most `max_tokens` a verdict), through the openai
    client."""
    try:
        import openai
    except ImportError:
        raise LmforgeError(f"{where}: judge tasks need the openai client: pip install 'lmforge[eval]'") from None
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "not-needed", max_retries=1)

    def ask(messages: list[dict]) -> str:
        try:
            done = client.chat.completions.create(
                model=model, messages=messages, temperature=0.0, max_tokens=max_tokens
            )
        except openai.APIConnectionError as err:
            raise LmforgeError(f"{where}: cannot reach the judge at {base_url} ({err}); is the server up?") from None
        except openai.APIStatusError as err:
            raise LmforgeError(
                f"{where}: the judge at {base_url} answered {err.status_code} for model {model!r}: {err.message}"
                f"{f' (is {api_key_env} set?)' if err.status_code == 401 else ''}"
            ) from None
        return done.choices[0].message.content or ""

    return ask


def evaluate_judge(loaded: LoadedRun, spec: TaskSpec, batch_size: int, keep_samples: bool = False) -> dict:
    judge = openai_judge(spec.base_url, spec.judge_model, spec.api_key_env, spec.where, spec.judge_max_tokens)
    pairwise_reference = spec.mode == "pairwise" and spec.opponent == "reference"
    rows = prompt_rows(spec.data, spec.limit, need_reference=pairwise_reference)
    replies = _answers(loaded, rows, spec, batch_size)
    settings = {"data": str(spec.data), "mode": spec.mode, "judge_model": spec.judge_model, "base_url": spec.base_url}
    if spec.mode == "single":
        verdicts = [judge(single_messages(_question(r), reply, r.reference)) for r, reply in zip(rows, replies)]
        ratings = [parse_rating(v) for v in verdicts]
        metrics, counts = rating_summary(ratings)
        samples = [
            {"where": r.where, "reply": reply, "rating": rating, "verdict": v}
            for r, reply, rating, v in zip(rows, replies, ratings, verdicts)
        ]
    else:
        theirs = [r.reference for r in rows] if pairwise_reference else _opponent_answers(rows, spec, batch_size)
        outcomes = [
            judge_pair(judge, _question(r), ours, other, None if pairwise_reference else r.reference)
            for r, ours, other in zip(rows, replies, theirs)
        ]
        metrics, counts = pair_summary(outcomes)
        settings["opponent"] = spec.opponent
        samples = [
            {"where": r.where, "reply": ours, "opponent": other, "outcome": o.outcome, "verdicts": list(o.verdicts)}
            for r, ours, other, o in zip(rows, replies, theirs, outcomes)
        ]
    out = {"metrics": metrics, "counts": counts, "settings": settings}
    if keep_samples:
        out["samples"] = samples
    return out


def _answers(loaded: LoadedRun, rows: list[PromptRow], spec: TaskSpec, batch_size: int) -> list[str]:
    model, tokenizer, template = loaded
    conversations = [r.messages for r in rows]
    return generate_replies(model, tokenizer, template, conversations, spec.max_new_tokens, batch_size=batch_size)


def _opponent_answers(rows: list[PromptRow], spec: TaskSpec, batch_size: int) -> list[str]:
    from lmforge.infer.load import load_run

    other = load_run(spec.opponent)
    return _answers(other, rows, spec, batch_size)


def _question(row: PromptRow) -> str:
    """The conversation the answer replies to, as the judge reads it: the last user message, after any earlier
    turns written out."""
    if len(row.messages) == 1:
        return row.messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in row.messages)
