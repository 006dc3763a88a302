"""Generation tasks: greedy replies to each row's prompt through the run's chat template, scored against the
row's reference by each of the task's scorers (scorers.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.evaluate.rows import prompt_rows
from lmforge.infer.chat import generate_replies

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.evaluate.tasks import TaskSpec


def evaluate_generation(
    model, tokenizer: Tokenizer, template: str, spec: TaskSpec, batch_size: int, keep_samples: bool = False
) -> dict:
    """Each scorer's mean over the rows, and the replies with their scores where `keep_samples`."""
    rows = prompt_rows(spec.data, spec.limit)
    replies = generate_replies(
        model, tokenizer, template, [r.messages for r in rows], spec.max_new_tokens, batch_size=batch_size
    )
    scores = {s.name: [s(reply, row.reference) for reply, row in zip(replies, rows)] for s in spec.scorers}
    out = {
        "metrics": {name: round(sum(values) / len(values), 6) for name, values in scores.items()},
        "counts": {"rows": len(rows)},
        "settings": {"data": str(spec.data), "max_new_tokens": spec.max_new_tokens, "greedy": True},
    }
    if keep_samples:
        out["samples"] = [
            {"where": row.where, "reply": reply, "reference": row.reference, **{n: v[k] for n, v in scores.items()}}
            for k, (reply, row) in enumerate(zip(replies, rows))
        ]
    return out
