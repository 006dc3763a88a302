"""From the recipe's data section to tokenised training and eval examples, with a report of what happened.

SFT: each conversation is rendered with the run's chat template and labelled by `masks.encode_conversation`,
then cut at `data.max_length` (the end goes). A sample left with no trained token is dropped and counted
by reason. Pretraining: `text.build_text_examples` (blocks, or packed bins).

The eval split is taken from the records before tokenisation: `data.eval.fraction` picks a seeded
(`data.seed`) random subset, at least one record, keeping file order; `data.eval.path` reads another file.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config.recipe import DataSource, DataSpec, Recipe
from lmforge.data.masks import IGNORE_INDEX, Encoded, encode_conversation
from lmforge.data.readers import read_source
from lmforge.data.records import Conversation, Text
from lmforge.data.templates import resolve_chat_template
from lmforge.data.text import build_text_examples
from lmforge.errors import LmforgeError

FINGERPRINT_VERSION = b"lmforge-data-1"


@dataclass
class DataReport:
    samples: int
    truncated: int
    dropped: int
    reasons: dict[str, int]
    fingerprint: str
    tokens: int = 0  # train tokens in the examples
    trained_tokens: int = 0  # train tokens that carry loss (labels after the causal shift)
    eval_samples: int = 0
    dropped_tokens: int = 0  # pt blocks: the tail after the last full block
    packing_efficiency: float | None = None  # pt packing: real tokens / bin capacity


@dataclass
class DataBundle:
    train: list[dict]
    eval: list[dict] | None
    report: DataReport


@dataclass
class _Built:
    examples: list[dict]
    truncated: int = 0
    reasons: Counter = field(default_factory=Counter)
    dropped_tokens: int = 0
    efficiency: float | None = None


def build_datasets(recipe: Recipe, tokenizer) -> DataBundle:
    """Train (and eval) examples: {"input_ids", "labels"} (+ "position_ids" when packed)."""
    data = recipe.data
    records = read_records(data.train, recipe.stage)
    train_records, eval_records = split_eval(records, data, recipe.stage)
    template = resolve_chat_template(tokenizer, recipe.model.chat_template) if recipe.stage == "sft" else None
    train = _build(recipe, tokenizer, template, train_records, "train")
    evaluation = _build(recipe, tokenizer, template, eval_records, "eval") if eval_records is not None else None
    report = DataReport(
        samples=len(train.examples),
        truncated=train.truncated,
        dropped=sum(train.reasons.values()),
        reasons=dict(train.reasons),
        fingerprint=data_fingerprint(recipe, tokenizer, template),
        tokens=sum(len(e["input_ids"]) for e in train.examples),
        trained_tokens=trained_tokens(train.examples),
        eval_samples=len(evaluation.examples) if evaluation else 0,
        dropped_tokens=train.dropped_tokens,
        packing_efficiency=train.efficiency,
    )
    _say(summary_line(report, recipe, len(train_records)))
    if evaluation is not None:
        _say(f"lmforge: eval: {len(evaluation.examples)} samples from {len(eval_records)} records"
             + _drop_note(evaluation.truncated, evaluation.reasons, data.max_length))
    return DataBundle(train=train.examples, eval=evaluation.examples if evaluation else None, report=report)


def read_records(sources: list[DataSource], stage: str) -> list[Conversation] | list[Text]:
    records: list = []
    for source in sources:
        records.extend(read_source(source, stage))
    return records


def split_eval(records: list, data: DataSpec, stage: str) -> tuple[list, list | None]:
    """(train records, eval records or None) as `data.eval` says; the fraction split is seeded by data.seed."""
    if data.eval is None:
        return records, None
    if data.eval.path is not None:
        return records, read_source(DataSource(path=data.eval.path), stage)
    if data.eval.fraction is None:
        return records, None
    n_eval = max(1, round(len(records) * data.eval.fraction))
    if n_eval >= len(records):
        raise LmforgeError(f"data.eval.fraction {data.eval.fraction} of {len(records)} records leaves nothing to "
                           "train on; lower the fraction or add records")
    chosen = set(random.Random(data.seed).sample(range(len(records)), n_eval))
    train = [r for i, r in enumerate(records) if i not in chosen]
    evaluation = [r for i, r in enumerate(records) if i in chosen]
    return train, evaluation


def encode_sample(tokenizer, template: str, conv: Conversation, max_length: int) -> tuple[Encoded, bool, str | None]:
    """(encoded sample cut to max_length, whether it was cut, why it must be dropped or None)."""
    enc = encode_conversation(tokenizer, template, conv)
    truncated = len(enc.input_ids) > max_length
    if truncated:
        enc = Encoded(input_ids=enc.input_ids[:max_length], labels=enc.labels[:max_length], text=enc.text)
    if all(label == IGNORE_INDEX for label in enc.labels[1:]):
        reason = f"no trained token within max_length {max_length}" if truncated else "no trained token"
        return enc, truncated, reason
    return enc, truncated, None


def _build(recipe: Recipe, tokenizer, template: str | None, records: list, split: str) -> _Built:
    data = recipe.data
    if recipe.stage == "pt":
        built = build_text_examples(tokenizer, [r.text for r in records], data.max_length, data.packing)
        if not built.examples:
            raise LmforgeError(f"the {split} documents hold {built.tokens} tokens, fewer than one block of "
                               f"data.max_length {data.max_length}; lower max_length, add text or set data.packing")
        return _Built(built.examples, dropped_tokens=built.dropped_tokens,
                      efficiency=built.efficiency if data.packing else None)
    out = _Built([])
    for conv in records:
        enc, truncated, reason = encode_sample(tokenizer, template, conv, data.max_length)
        out.truncated += truncated
        if reason:
            out.reasons[reason] += 1
        else:
            out.examples.append({"input_ids": enc.input_ids, "labels": enc.labels})
    if not out.examples:
        raise LmforgeError(f"no {split} sample is left: all {len(records)} were dropped ({_reasons(out.reasons)}); "
                           f"raise data.max_length (now {data.max_length}) or check the data with "
                           "`lmforge data inspect`")
    return out


def trained_tokens(examples: list[dict]) -> int:
    """Tokens that carry loss, counted as the loss sees them: labels after the causal shift."""
    return sum(sum(1 for label in e["labels"][1:] if label != IGNORE_INDEX) for e in examples)


def data_fingerprint(recipe: Recipe, tokenizer, template: str | None) -> str:
    """sha256 naming everything that decides the examples, so a resumed run can tell if its data changed.

    Hashed, each field length-prefixed: a format version; stage, max_length, packing, the eval
    fraction and data.seed; the tokenizer's size (len(tokenizer), added tokens included); the chat
    template text (sft); and the raw bytes of every train file, then the eval file, in recipe order.
    File paths are not hashed, so moving the data keeps the fingerprint.
    """
    data = recipe.data
    h = hashlib.sha256()

    def put(value: bytes) -> None:
        h.update(len(value).to_bytes(8, "little"))
        h.update(value)

    put(FINGERPRINT_VERSION)
    fraction = data.eval.fraction if data.eval else None
    put(f"{recipe.stage}|{data.max_length}|{data.packing}|{fraction}|{data.seed}|{len(tokenizer)}".encode())
    put((template or "").encode("utf-8"))
    paths = [s.path for s in data.train] + ([data.eval.path] if data.eval and data.eval.path else [])
    for path in paths:
        put(_file_digest(Path(path).expanduser()))
    return h.hexdigest()


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def summary_line(report: DataReport, recipe: Recipe, n_records: int) -> str:
    data = recipe.data
    share = report.trained_tokens / report.tokens if report.tokens else 0.0
    head = f"lmforge: data: {report.samples:,} train samples from {n_records:,} records, {report.tokens:,} tokens"
    if recipe.stage == "pt":
        if data.packing:
            return f"{head} packed into bins of {data.max_length} (packing efficiency {report.packing_efficiency:.1%})"
        return (f"{head} in blocks of {data.max_length} ({report.dropped_tokens:,} tokens after the last full "
                "block dropped)")
    return f"{head}, {share:.1%} trained" + _drop_note(report.truncated, report.reasons, data.max_length)


def _drop_note(truncated: int, reasons: dict[str, int], max_length: int) -> str:
    note = f"; {truncated:,} truncated to max_length {max_length}" if truncated else "; none truncated"
    dropped = sum(reasons.values())
    return note + (f", {dropped:,} dropped ({_reasons(reasons)})" if dropped else ", none dropped")


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {why}" for why, count in reasons.items())


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
