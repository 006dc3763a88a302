"""Loss and perplexity on a dataset, over exactly the tokens training puts loss on.

Rows are read by the data layer (any format training reads: text, messages, sharegpt, alpaca) and encoded by
it: chats through `data.build.encode.encode_samples` (the chat template's masks, `train_on`, one sample per
turn where the template needs it, the same truncation to `max_length`), text as pretraining tokenises a
document (BOS where the tokenizer adds one, EOS behind) cut into windows of `max_length`, every token trained
but the first of each window, which nothing in it predicts. The figure is the mean negative log-likelihood per
trained token over the whole dataset (a long sample weighs by its tokens, as in training) and perplexity =
exp(loss).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.config.settings import Source
from lmforge.data.build.encode import EncodeSettings, encode_samples
from lmforge.data.build.text import tokenize_documents
from lmforge.data.examples import trained_tokens
from lmforge.data.sources.read import iter_rows, read_source
from lmforge.errors import LmforgeError
from lmforge.evaluate.likelihood import row_logps

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.evaluate.tasks import TaskSpec

CHAT_KEYS = ("messages", "conversations", "instruction")


@dataclass
class Sequences:
    """What the loss is computed on: token ids with their labels (IGNORE_INDEX where no loss), and what was left
    out on the way."""

    kind: str  # text or conversation
    rows: list[tuple[list[int], list[int]]]
    records: int
    dropped: Counter = field(default_factory=Counter)  # samples left out, by reason
    cut: int = 0  # samples shortened to max_length


def data_kind(path: Path, fmt: str) -> str:
    """text or conversation: as `format` says, else as the first row's keys tell (text rows have only `text`)."""
    if fmt != "auto":
        return "text" if fmt == "text" else "conversation"
    for _, row in iter_rows(Source(path=str(path))):
        return "text" if "text" in row and not any(key in row for key in CHAT_KEYS) else "conversation"
    raise LmforgeError(f"{path}: the file holds no rows; expected one JSON object per line")


def build_sequences(tokenizer: Tokenizer, template: str, spec: TaskSpec) -> Sequences:
    """The task's rows encoded as training encodes them (module docstring)."""
    kind = data_kind(spec.data, spec.format)
    source = Source(path=str(spec.data), format=spec.format)
    records = read_source(source, kind).records[: spec.limit]
    if kind == "text":
        rows = []
        for ids in tokenize_documents(tokenizer, [r.text for r in records]):
            rows += [(ids[k : k + spec.max_length],) * 2 for k in range(0, len(ids), spec.max_length)]
        return Sequences(kind, [(list(a), list(b)) for a, b in rows if len(a) > 1], len(records))
    settings = EncodeSettings("conversation", template, spec.max_length, train_on=spec.train_on)
    out = Sequences(kind, [], len(records))
    for outcome in encode_samples(tokenizer, records, settings):
        if isinstance(outcome, LmforgeError):
            raise LmforgeError(f"{spec.where}: {outcome}")
        for sample in outcome:
            if sample.dropped:
                out.dropped[sample.dropped] += 1
                continue
            out.cut += sample.cut is not None
            out.rows.append((sample.sides[0].input_ids, sample.sides[0].labels))
    return out


def evaluate_perplexity(model, tokenizer: Tokenizer, template: str, spec: TaskSpec, batch_size: int) -> dict:
    """The task's metrics (loss, perplexity) and counts."""
    seqs = build_sequences(tokenizer, template, spec)
    total = -sum(row_logps(model, seqs.rows, batch_size))
    tokens = sum(trained_tokens(labels) for _, labels in seqs.rows)
    if not tokens:
        raise LmforgeError(
            f"{spec.where}: no token carries loss in {spec.data} (train_on {spec.train_on}); nothing to score"
        )
    loss = total / tokens
    counts = {"records": seqs.records, "samples": len(seqs.rows), "tokens": tokens, "cut": seqs.cut}
    if seqs.dropped:
        counts["dropped"] = dict(seqs.dropped)
    return {
        "metrics": {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 700)), 6)},
        "counts": counts,
        "settings": {
            "data": str(spec.data),
            "kind": seqs.kind,
            "train_on": spec.train_on if seqs.kind == "conversation" else "every token",
            "max_length": spec.max_length,
        },
    }
