"""Multiple choice by log-likelihood (MMLU-style): each choice scored as the assistant's reply to the question.

Each choice is encoded as training encodes a one-turn conversation (question, then the choice as the reply),
with the final reply labelled (`masks.LAST_REPLY`): the scored tokens are the choice and the template's
end-of-turn token, after exactly the generation prompt's tokens. The model picks the choice with the highest
log-likelihood (`accuracy`), or with the highest log-likelihood per byte of the choice's text
(`accuracy_norm`, lm-evaluation-harness's acc_norm), which does not favour short choices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.data.chat.masks import LAST_REPLY, encode_batch
from lmforge.data.records import Conversation, Message
from lmforge.errors import LmforgeError
from lmforge.evaluate.likelihood import row_logps
from lmforge.evaluate.rows import ChoiceRow, choice_rows

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.evaluate.tasks import TaskSpec


def choice_logps(
    model, tokenizer: Tokenizer, template: str, rows: list[ChoiceRow], batch_size: int
) -> list[list[float]]:
    """The log-likelihood of every choice of every row as the reply to its question."""
    convs = [
        Conversation(
            [*(Message(m["role"], m["content"]) for m in row.messages), Message("assistant", choice)], row.where
        )
        for row in rows
        for choice in row.choices
    ]
    encoded = []
    for conv, result in zip(convs, encode_batch(tokenizer, template, convs, LAST_REPLY)):
        if isinstance(result, LmforgeError):
            raise LmforgeError(f"{conv.source}: {result}")
        encoded.append((result[0].input_ids, result[0].labels))
    flat = iter(row_logps(model, encoded, batch_size))
    return [[next(flat) for _ in row.choices] for row in rows]


def pick(logps: list[float], choices: list[str], normalise: bool) -> int:
    """The index of the likeliest choice (per byte of its text where `normalise`); the first on a tie."""
    values = [lp / max(len(c.encode("utf-8")), 1) if normalise else lp for lp, c in zip(logps, choices)]
    return max(range(len(values)), key=lambda k: (values[k], -k))


def evaluate_choice(
    model, tokenizer: Tokenizer, template: str, spec: TaskSpec, batch_size: int, keep_samples: bool = False
) -> dict:
    rows = choice_rows(spec.data, spec.limit)
    logps = choice_logps(model, tokenizer, template, rows, batch_size)
    picked = [pick(lp, row.choices, False) for lp, row in zip(logps, rows)]
    normed = [pick(lp, row.choices, True) for lp, row in zip(logps, rows)]
    n = len(rows)
    out = {
        "metrics": {
            "accuracy": round(sum(p == r.answer for p, r in zip(picked, rows)) / n, 6),
            "accuracy_norm": round(sum(p == r.answer for p, r in zip(normed, rows)) / n, 6),
        },
        "counts": {"questions": n, "choices": sum(len(r.choices) for r in rows)},
        "settings": {"data": str(spec.data)},
    }
    if keep_samples:
        out["samples"] = [
            {"where": r.where, "answer": r.answer, "picked": p, "picked_norm": q, "logps": [round(x, 4) for x in lp]}
            for r, p, q, lp in zip(rows, picked, normed, logps)
        ]
    return out
