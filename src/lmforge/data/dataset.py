"""From the recipe's data section to tokenised training and eval examples, with a report of what happened.

The flow: `registry.resolve_sources` (names -> concrete sources) -> `readers.read_source` for each
(`data.on_error`) -> `mixing.mix` (weights, ratios, sample counts; seeded) -> the eval split ->
`preprocess.encode_records` (batched, in parallel processes, truncation policy applied) -> examples.
The result is cached on disk (`cache.py`) under a key naming the data's content, the tokenizer, the
template and every setting that shapes the examples; a second run with the same key loads it instead.

Every record or sample left out is counted and printed: bad records skipped under `on_error: skip`
(also written to a rejects file with why), samples dropped by the truncation policy, mixing's draw.

The eval split is taken from the mixed records before tokenisation: `data.eval.fraction` picks a
seeded (`data.seed`) random subset, at least one record, keeping order, and no copy of an eval record
(mixing may repeat records) stays in train; `data.eval.path` reads another file.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.config.recipe import DataSource, DataSpec, Recipe
from lmforge.console import say
from lmforge.data import cache, stream
from lmforge.data.masks import IGNORE_INDEX, Encoded
from lmforge.data.mixing import mix
from lmforge.data.packing import pack_arrays
from lmforge.data.preprocess import (EncodedChunk, EncodeSettings, collector_paused, default_workers, encode_record,
                                     encode_records, processes_for)
from lmforge.data.readers import KIND_BY_STAGE, Reject, read_source
from lmforge.data.registry import resolve_sources
from lmforge.data.rows import ExampleRows
from lmforge.data.templates import resolve_chat_template
from lmforge.data.text import make_blocks, pack_documents
from lmforge.errors import LmforgeError

MAX_PROBLEMS = 10
ENCODE_FAILED = "template cannot encode it"


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
    packing_efficiency: float | None = None  # data.packing: real tokens / bin capacity (train)
    records: int = 0  # train records encoded (after mixing and the eval split)
    truncated_history: int = 0  # of `truncated`: shortened by dropping older turns
    split_conversations: int = 0  # conversations encoded as one sample per assistant turn
    rejected: int = 0  # bad records skipped (on_error: skip), train and eval
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    rejects_path: str | None = None
    sources: dict[str, int] = field(default_factory=dict)  # records each source contributes to the mix
    eval_truncated: int = 0
    eval_dropped: int = 0
    eval_reasons: dict[str, int] = field(default_factory=dict)
    cache: str = "off"  # hit | miss | off


@dataclass
class DataBundle:
    train: Sequence[dict]  # rows.ExampleRows for SFT/pt: each example built from the flat arrays when read
    eval: Sequence[dict] | None
    report: DataReport
    rejects: bytes = b""  # the skipped records as JSON Lines, for the caller to write where it keeps its files


@dataclass
class _Split:
    examples: cache.Examples
    records: int = 0
    truncated: int = 0
    truncated_history: int = 0
    split: int = 0
    reasons: Counter = field(default_factory=Counter)
    dropped_tokens: int = 0
    efficiency: float | None = None


def build_datasets(recipe: Recipe, tokenizer, *, rejects_path: Path | None = None) -> DataBundle:
    """Train (and eval) examples: {"input_ids", "labels"} (+ "position_ids" when packed).

    Rejected records are written to `rejects_path` when given; the bundle holds them either way.
    """
    begin = time.perf_counter()
    data = recipe.data
    template = resolve_chat_template(tokenizer, recipe.model.chat_template) if recipe.stage == "sft" else None
    sources = resolve_sources(data, recipe.stage)
    fingerprint = cache.fingerprint(recipe, sources, tokenizer, template)
    rejects_at = rejects_path
    key = cache.make_key({"fingerprint": fingerprint})
    root = cache.cache_root(data.cache_dir)
    if data.cache:
        hit = cache.load(root, key)
        if hit is not None:
            say(f"lmforge: data: cache hit, reusing {root / key} (looked up and loaded in "
                 f"{time.perf_counter() - begin:.2f}s)")
            return _from_cache(hit, recipe, rejects_at)
    start = time.perf_counter()
    train, evaluation, rejects, taken = _build_fresh(recipe, tokenizer, template, sources)
    report = _report(train, evaluation, rejects, taken, fingerprint)
    report.cache = "miss" if data.cache else "off"
    splits = {"train": train.examples, **({"eval": evaluation.examples} if evaluation else {})}
    rejects_bytes = _rejects_jsonl(rejects)
    if report.cache == "miss":
        entry = cache.save(root, key, splits, {"report": vars(report)}, rejects_bytes)
        say(f"lmforge: data: cache miss, encoded in {time.perf_counter() - start:.1f}s "
             f"({report.tokens / max(time.perf_counter() - start, 1e-9):,.0f} tokens/s); cached in {entry}")
    return _finish(recipe, report, splits, rejects_bytes, rejects_at)


def read_and_mix(sources: list[DataSource], kind: str, data: DataSpec) -> tuple[list, list[Reject], dict[str, int]]:
    """Every source read (bad records raised or collected per data.on_error), then mixed as the recipe says;
    also the count each source contributes."""
    parts, rejects = [], []
    with collector_paused():
        for source in sources:
            got = read_source(source, kind, on_error=data.on_error)
            parts.append((source, got.records))
            rejects.extend(got.rejects)
    records, taken = mix(parts, data.seed)
    _say_mixed(sources, taken)
    return records, rejects, taken


def _say_mixed(sources: list[DataSource], taken: dict[str, int]) -> None:
    if len(sources) > 1:
        say("lmforge: data: mixed " + ", ".join(f"{label} {n:,}" for label, n in taken.items()) + " records")


def _build_fresh(recipe: Recipe, tokenizer, template: str | None, sources: list[DataSource]):
    data = recipe.data
    kind = KIND_BY_STAGE[recipe.stage]
    if kind not in ("text", "conversation"):
        raise LmforgeError(f"stage {recipe.stage}: encoding {kind} records into examples is not built yet")
    settings = encode_settings(recipe, template)
    workers = default_workers(data.workers)
    if stream.streamable(sources, data):  # every record once, in file order: read in the workers
        got = stream.encode_sources(tokenizer, sources, settings, workers, data.on_error)
        _say_mixed(sources, got.taken)
        rejects, taken = got.rejects, got.taken
        _, eval_records = split_eval([], data, recipe.stage, rejects)  # data.eval.path, if any (no fraction)
        train = _split_of(recipe, got.chunks, sum(taken.values()), "train", rejects)
    else:
        records, rejects, taken = read_and_mix(sources, kind, data)
        train_records, eval_records = split_eval(records, data, recipe.stage, rejects)
        train = _encode_split(recipe, tokenizer, settings, workers, train_records, "train", rejects)
    evaluation = None
    if eval_records is not None:
        evaluation = _encode_split(recipe, tokenizer, settings, workers, eval_records, "eval", rejects)
    return train, evaluation, rejects, taken


def encode_settings(recipe: Recipe, template: str | None) -> EncodeSettings:
    """How the recipe says records become samples (mask policy, per-turn split, length, truncation)."""
    data = recipe.data
    return EncodeSettings(stage=recipe.stage, template=template, max_length=data.max_length,
                          train_on=data.train_on, split_turns=data.split_turns, truncation=data.truncation)


def read_records(sources: list[DataSource], stage: str, on_error: str = "strict") -> list:
    """The records of concrete sources (no registry names), in order; bad ones raise unless skipped."""
    records: list = []
    for source in sources:
        records.extend(read_source(source, KIND_BY_STAGE[stage], on_error=on_error).records)
    return records


def split_eval(records: list, data: DataSpec, stage: str, rejects: list | None = None) -> tuple[list, list | None]:
    """(train records, eval records or None) as `data.eval` says; the fraction split is seeded by data.seed."""
    if data.eval is None:
        return records, None
    if data.eval.path is not None:
        got = read_source(DataSource(path=data.eval.path), KIND_BY_STAGE[stage], on_error=data.on_error)
        if rejects is not None:
            rejects.extend(got.rejects)
        return records, got.records
    if data.eval.fraction is None:
        return records, None
    chosen = eval_indices(len(records), data.eval.fraction, data.seed)
    evaluation, held = [], set()
    for i in sorted(chosen):
        if id(records[i]) not in held:
            held.add(id(records[i]))
            evaluation.append(records[i])
    train = [r for r in records if id(r) not in held]  # mixing repeats records: no copy of an eval one trains
    if not train:
        raise LmforgeError(f"data.eval.fraction {data.eval.fraction} takes every distinct record for eval; lower "
                           "the fraction or add records")
    return train, evaluation


def eval_indices(n: int, fraction: float, seed: int) -> set[int]:
    """The seeded eval choice: round(n * fraction) indices (at least one), leaving at least one to train."""
    n_eval = max(1, round(n * fraction))
    if n_eval >= n:
        raise LmforgeError(f"data.eval.fraction {fraction} of {n} records leaves nothing to "
                           "train on; lower the fraction or add records")
    return set(random.Random(seed).sample(range(n), n_eval))


def encode_sample(tokenizer, template: str, conv, max_length: int,
                  settings: EncodeSettings | None = None) -> tuple[Encoded, bool, str | None]:
    """(the first sample of one conversation as training builds it, whether it was shortened, why
    training drops it or None). `settings` defaults to the recipe defaults (cut, all assistant turns)."""
    settings = settings or EncodeSettings(stage="sft", template=template, max_length=max_length)
    sample = encode_record(tokenizer, conv, settings)[0]
    return sample.encoded, sample.cut is not None, sample.dropped


def _encode_split(recipe: Recipe, tokenizer, settings: EncodeSettings, workers: int, records: list,
                  split: str, rejects: list) -> _Split:
    data = recipe.data
    strict = data.on_error == "strict"
    if processes_for(len(records), workers) > 1:
        say(f"lmforge: data: encoding {len(records):,} {split} records in {processes_for(len(records), workers)} "
             "processes")
    chunks = encode_records(tokenizer, records, settings, workers, stop_on_error=strict)
    return _split_of(recipe, chunks, len(records), split, rejects)


def _split_of(recipe: Recipe, chunks: list[EncodedChunk], n_records: int, split: str, rejects: list) -> _Split:
    """The encoded chunks of a split's records as one split; records that cannot be encoded raise (strict) or
    become rejects."""
    data = recipe.data
    errors = [e for c in chunks for e in c.errors]
    if errors and data.on_error == "strict":
        raise _encode_error(errors)
    rejects.extend(Reject(source, reason, raw, category=ENCODE_FAILED) for source, reason, raw in errors)
    if recipe.stage == "pt":
        return _text_split(chunks, data, split, n_records)
    out = _Split(_concat(chunks), records=n_records - len(errors))
    for c in chunks:
        out.truncated += c.truncated
        out.truncated_history += c.cut_history
        out.split += c.split
        out.reasons.update(c.reasons)
    if not len(out.examples.lengths):
        raise LmforgeError(f"no {split} sample is left: all {n_records} were dropped ({_reasons(out.reasons)}); "
                           f"raise data.max_length (now {data.max_length}) or check the data with "
                           "`lmforge data inspect`")
    return out


def _text_split(chunks: list[EncodedChunk], data: DataSpec, split: str, n_records: int) -> _Split:
    flat = _concat(chunks)
    ids = flat.input_ids.tolist()
    docs, start = [], 0
    for length in flat.lengths.tolist():
        docs.append(ids[start:start + length])
        start += length
    built = pack_documents(docs, data.max_length) if data.packing else make_blocks(docs, data.max_length)
    if not built.examples:
        raise LmforgeError(f"the {split} documents hold {built.tokens} tokens, fewer than one block of "
                           f"data.max_length {data.max_length}; lower max_length, add text or set data.packing")
    return _Split(cache.Examples.from_dicts(built.examples), records=n_records, dropped_tokens=built.dropped_tokens,
                  efficiency=built.efficiency if data.packing else None)


def _concat(chunks: list[EncodedChunk]) -> cache.Examples:
    def cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)

    return cache.Examples(input_ids=cat([c.input_ids for c in chunks], np.int32),
                          labels=cat([c.labels for c in chunks], np.int32),
                          lengths=cat([c.lengths for c in chunks], np.int64))


def _encode_error(errors: list[tuple[str, str, Any]]) -> LmforgeError:
    if len(errors) == 1:
        return LmforgeError(errors[0][1])
    shown = [reason for _, reason, _ in errors[:MAX_PROBLEMS]]
    more = f" (first {MAX_PROBLEMS} shown)" if len(errors) > MAX_PROBLEMS else ""
    return LmforgeError(f"{len(errors)} records cannot be encoded{more}; fix them, choose another "
                        "model.chat_template, or set data.on_error: skip to skip them:\n  " + "\n  ".join(shown))


def _report(train: _Split, evaluation: _Split | None, rejects: list, taken: dict[str, int],
            fingerprint: str) -> DataReport:
    ex = train.examples
    return DataReport(
        samples=len(ex.lengths),
        truncated=train.truncated,
        dropped=sum(train.reasons.values()),
        reasons=dict(train.reasons),
        fingerprint=fingerprint,
        tokens=int(ex.lengths.sum()),
        trained_tokens=trained_tokens_flat(ex),
        eval_samples=len(evaluation.examples.lengths) if evaluation else 0,
        dropped_tokens=train.dropped_tokens,
        packing_efficiency=train.efficiency,
        records=train.records,
        truncated_history=train.truncated_history,
        split_conversations=train.split,
        rejected=len(rejects),
        rejected_reasons=dict(Counter(r.category for r in rejects)),
        sources=dict(taken),
        eval_truncated=evaluation.truncated if evaluation else 0,
        eval_dropped=sum(evaluation.reasons.values()) if evaluation else 0,
        eval_reasons=dict(evaluation.reasons) if evaluation else {},
    )


def _from_cache(hit, recipe: Recipe, rejects_at: Path) -> DataBundle:
    splits, meta, rejects_bytes = hit
    report = DataReport(**meta["report"])
    report.cache = "hit"
    return _finish(recipe, report, splits, rejects_bytes, rejects_at)


def _finish(recipe: Recipe, report: DataReport, splits: dict[str, cache.Examples], rejects_bytes: bytes,
            rejects_at: Path | None) -> DataBundle:
    if report.rejected:
        where = ""
        if rejects_at is not None:
            report.rejects_path = str(write_rejects(rejects_at, rejects_bytes))
            where = f"; they are listed with why in {report.rejects_path}"
        say(f"lmforge: data: skipped {report.rejected:,} bad records (data.on_error: skip): "
            f"{_reasons(report.rejected_reasons)}{where}")
    if report.split_conversations:
        say(f"lmforge: data: {report.split_conversations:,} conversations became one sample per assistant turn "
             f"(data.split_turns: {recipe.data.split_turns})")
    say(summary_line(report, recipe))
    evaluation = splits.get("eval")
    if evaluation is not None:
        say(f"lmforge: eval: {report.eval_samples:,} samples"
              + _drop_note(report.eval_truncated, 0, report.eval_reasons, recipe.data.max_length))
    if recipe.data.packing and recipe.stage == "sft":  # packing hook (I5-A): SFT samples into bins, packing.py
        splits = {name: _pack_split(name, ex, recipe.data.max_length, report) for name, ex in splits.items()}
        evaluation = splits.get("eval")
    return DataBundle(train=ExampleRows(splits["train"]), eval=ExampleRows(evaluation) if evaluation else None,
                      report=report, rejects=rejects_bytes)


def _pack_split(name: str, ex: cache.Examples, max_length: int, report: DataReport) -> cache.Examples:
    """SFT samples packed best-fit-decreasing into rows of max_length (after the cache, so it holds samples)."""
    (ids, labels, positions, rows), efficiency = pack_arrays(ex.input_ids, ex.labels, ex.lengths, max_length)
    if name == "train":
        report.packing_efficiency = efficiency
    say(f"lmforge: data: packed {len(ex.lengths):,} {name} samples into {len(rows):,} rows of {max_length} "
         f"(packing efficiency {efficiency:.1%})")
    return cache.Examples(input_ids=ids, labels=labels, lengths=rows, position_ids=positions)


def _rejects_jsonl(rejects: list) -> bytes:
    lines = [json.dumps({"source": r.source, "reason": r.reason, "category": r.category, "raw": r.raw},
                        ensure_ascii=False, default=str) for r in rejects]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def write_rejects(path: Path, content: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    except OSError as err:
        raise LmforgeError(f"cannot write the rejects file {path} ({err.strerror}); make its folder writable") from None
    return path


def trained_tokens(examples: list[dict]) -> int:
    """Tokens that carry loss, counted as the loss sees them: labels after the causal shift."""
    return sum(sum(1 for label in e["labels"][1:] if label != IGNORE_INDEX) for e in examples)


def trained_tokens_flat(ex: cache.Examples) -> int:
    """trained_tokens on flat arrays: each example's first label is never predicted."""
    if not len(ex.lengths):
        return 0
    firsts = np.concatenate([[0], np.cumsum(ex.lengths)[:-1]])
    trained = ex.labels != IGNORE_INDEX
    return int(trained.sum() - trained[firsts[ex.lengths > 0]].sum())


def data_fingerprint(recipe: Recipe, tokenizer, template: str | None) -> str:
    """sha256 naming everything that decides the examples, so a resumed run can tell if its data changed."""
    return cache.fingerprint(recipe, resolve_sources(recipe.data, recipe.stage), tokenizer, template)


def summary_line(report: DataReport, recipe: Recipe, n_records: int | None = None) -> str:
    data = recipe.data
    share = report.trained_tokens / report.tokens if report.tokens else 0.0
    n_records = report.records if n_records is None else n_records
    head = f"lmforge: data: {report.samples:,} train samples from {n_records:,} records, {report.tokens:,} tokens"
    if recipe.stage == "pt":
        if data.packing:
            return f"{head} packed into bins of {data.max_length} (packing efficiency {report.packing_efficiency:.1%})"
        return (f"{head} in blocks of {data.max_length} ({report.dropped_tokens:,} tokens after the last full "
                "block dropped)")
    return f"{head}, {share:.1%} trained" + _drop_note(report.truncated, report.truncated_history, report.reasons,
                                                     data.max_length)


def _drop_note(truncated: int, by_history: int, reasons: dict[str, int], max_length: int) -> str:
    note = f"; {truncated:,} truncated to max_length {max_length}" if truncated else "; none truncated"
    if by_history:
        note += f" ({by_history:,} by dropping older turns)"
    dropped = sum(reasons.values())
    return note + (f", {dropped:,} dropped ({_reasons(reasons)})" if dropped else ", none dropped")


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {why}" for why, count in reasons.items())
