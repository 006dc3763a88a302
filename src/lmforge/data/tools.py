"""`lmforge data stats | convert | validate | split`: the truth about a dataset, and the chores around it.

- stats RECIPE: the examples exactly as training builds them (cache included): sample count, token-length
  percentiles (nearest rank: the smallest length with at least p% of samples at or below it), the
  trained-token fraction (labels after the causal shift, as the loss sees them), truncated, dropped
  and rejected counts, and the packing efficiency that best-fit-decreasing bins of max_length would reach.
- convert IN OUT --to messages: any readable data (alpaca, sharegpt, messages, preference, KTO; JSON
  Lines, JSON, Parquet, CSV, a directory or glob) as OpenAI messages JSON Lines. Preference data
  becomes {"prompt": [...], "chosen": [...], "rejected": [...]}; KTO data {"prompt", "completion", "label"}.
- validate IN: every problem with its file:line; exit status 1 when there is any.
- split IN: train.jsonl and eval.jsonl in --out, rows unchanged, chosen as `data.eval.fraction` with
  the same seed would choose them from the same rows.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from lmforge.config.recipe import DataSource, Recipe
from lmforge.data.dataset import build_datasets, eval_indices
from lmforge.data.files import source_parts
from lmforge.data.masks import IGNORE_INDEX
from lmforge.data.packing import best_fit_decreasing
from lmforge.data.readers import iter_rows, read_source
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Text
from lmforge.errors import LmforgeError

DEFAULT_REJECTS = Path("lmforge-rejects.jsonl")
PERCENTILES = (50, 90, 99)
KIND_BY_FORMAT = {"text": "text", "preference": "preference", "kto": "kto"}


# ---- stats -------------------------------------------------------------------------------------------

def run_stats(recipe: Recipe, as_json: bool = False, stream: TextIO | None = None) -> int:
    from lmforge.model.load import load_tokenizer

    stream = stream or sys.stdout
    bundle = build_datasets(recipe, load_tokenizer(recipe.model), rejects_path=DEFAULT_REJECTS)
    stats = dataset_stats(bundle.train, recipe.data.max_length)
    report = bundle.report
    stats.update(
        records=report.records, truncated=report.truncated, truncated_history=report.truncated_history,
        dropped=report.dropped, dropped_reasons=report.reasons, rejected=report.rejected,
        rejected_reasons=report.rejected_reasons, rejects_path=report.rejects_path, eval_samples=report.eval_samples,
        sources=report.sources, split_conversations=report.split_conversations, cache=report.cache,
    )
    if as_json:
        stream.write(json.dumps(stats) + "\n")
    else:
        stream.write(format_stats(stats, recipe) + "\n")
    return 0


def dataset_stats(examples: list[dict], max_length: int) -> dict[str, Any]:
    """Figures of a list of examples: counts, length percentiles, trained fraction, packing estimate."""
    lengths = sorted(len(e["input_ids"]) for e in examples)
    tokens = sum(lengths)
    trained = sum(sum(1 for label in e["labels"][1:] if label != IGNORE_INDEX) for e in examples)
    bins = packed_bins(lengths, max_length)
    return {
        "samples": len(lengths),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_fraction": trained / tokens if tokens else 0.0,
        "length": {**{f"p{p}": percentile(lengths, p) for p in PERCENTILES},
                   "max": lengths[-1] if lengths else 0, "min": lengths[0] if lengths else 0},
        "max_length": max_length,
        "packed_rows": bins,
        "packing_efficiency": tokens / (bins * max_length) if bins else 0.0,
    }


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def packed_bins(lengths: list[int], capacity: int) -> int:
    """How many rows of `capacity` tokens best-fit-decreasing packing needs for samples of these lengths."""
    return len(best_fit_decreasing(lengths, capacity))


def format_stats(s: dict[str, Any], recipe: Recipe) -> str:
    length = s["length"]
    lines = [
        f"samples           {s['samples']:,} (from {s['records']:,} records; {s['eval_samples']:,} eval samples)",
        f"tokens            {s['tokens']:,}, trained {s['trained_tokens']:,} ({s['trained_fraction']:.1%})",
        f"length (tokens)   p50 {length['p50']:,}  p90 {length['p90']:,}  p99 {length['p99']:,}  "
        f"max {length['max']:,}  (max_length {s['max_length']:,})",
        *outcome_lines(s, recipe),
        f"packing estimate  {s['packing_efficiency']:.1%} of {s['packed_rows']:,} rows of {s['max_length']:,} tokens "
        "filled (best-fit decreasing)",
    ]
    if s["split_conversations"]:
        lines.append(f"split per turn    {s['split_conversations']:,} conversations")
    if len(s["sources"]) > 1:
        lines.append("mix               " + ", ".join(f"{k} {v:,}" for k, v in s["sources"].items()))
    return "\n".join(lines)


def outcome_lines(s: dict[str, Any], recipe: Recipe) -> list[str]:
    """The truncated, dropped and rejected lines of a stats table (SFT/pt and preference data alike)."""
    history = f" ({s['truncated_history']:,} by dropping older turns)" if s["truncated_history"] else ""
    rejects = f" -> {s['rejects_path']}" if s["rejects_path"] else ""
    return [
        f"truncated         {s['truncated']:,}{history} (data.truncation: {recipe.data.truncation})",
        f"dropped           {s['dropped']:,}" + _by(s["dropped_reasons"]),
        f"rejected          {s['rejected']:,}" + _by(s["rejected_reasons"]) + rejects,
    ]


def _by(reasons: dict[str, int]) -> str:
    return f" ({', '.join(f'{n:,} {why}' for why, n in reasons.items())})" if reasons else ""


# ---- convert -----------------------------------------------------------------------------------------

def run_convert(src: str, dst: Path, to: str = "messages", fmt: str = "auto", on_error: str = "strict") -> int:
    if to != "messages":
        raise LmforgeError(f"--to {to}: the only target format is messages (OpenAI messages JSON Lines)")
    source = DataSource(path=src, format=fmt)
    kind = data_kind(source)
    if kind == "text":
        raise LmforgeError(f"{src}: plain text has no roles to turn into messages; it is already the text format "
                           "(for chat data, give --format alpaca, sharegpt, ...)")
    got = read_source(source, kind, on_error=on_error)
    lines = [json.dumps(as_messages(record), ensure_ascii=False) + "\n" for record in got.records]
    _write_atomic(dst, "".join(lines))
    note = ""
    if got.rejects:
        rejects = dst.with_name(dst.name + ".rejects.jsonl")
        _write_atomic(rejects, "".join(json.dumps({"source": r.source, "reason": r.reason, "raw": r.raw},
                                                  ensure_ascii=False, default=str) + "\n" for r in got.rejects))
        note = f"; skipped {len(got.rejects):,} bad records ({_counts(got.rejects)}), listed in {rejects}"
    print(f"lmforge: wrote {len(got.records):,} {kind} records to {dst} as messages{note}", file=sys.stderr)
    return 0


def data_kind(source: DataSource) -> str:
    """The record kind a file holds: by its format, else by the keys of its first readable row."""
    if source.format in KIND_BY_FORMAT:
        return KIND_BY_FORMAT[source.format]
    for _, rows in source_parts(source):
        row = next((obj for _, obj in rows if isinstance(obj, dict)), None)
        if row is not None:
            def has(canonical: str) -> bool:
                return source.columns.get(canonical, canonical) in row

            if has("chosen") and has("rejected"):
                return "preference"
            if has("label"):
                return "kto"
            if has("text") and not any(has(k) for k in ("messages", "conversations", "instruction", "prompt")):
                return "text"
            return "conversation"
    return "conversation"


def as_messages(record) -> dict[str, Any]:
    """One record in OpenAI messages shape (preference and KTO in the conversational shape TRL reads)."""
    if isinstance(record, Conversation):
        return _with_tools({"messages": [m.as_dict() for m in record.messages]}, record.tools)
    if isinstance(record, PreferencePair):
        return _with_tools({"prompt": _dicts(record.prompt), "chosen": [record.chosen.as_dict()],
                            "rejected": [record.rejected.as_dict()]}, record.tools)
    if isinstance(record, KTOExample):
        return {"prompt": _dicts(record.prompt), "completion": [record.completion.as_dict()], "label": record.label}
    if isinstance(record, Text):
        return {"text": record.text}
    raise TypeError(f"not a record: {type(record).__name__}")


def _dicts(messages: list[Message]) -> list[dict]:
    return [m.as_dict() for m in messages]


def _with_tools(out: dict[str, Any], tools: list[dict] | None) -> dict[str, Any]:
    if tools:
        out["tools"] = tools
    return out


# ---- validate ----------------------------------------------------------------------------------------

def run_validate(src: str, fmt: str = "auto", kind: str | None = None, stream: TextIO | None = None) -> int:
    """Print every problem with where it is; 0 when there is none, 1 otherwise."""
    stream = stream or sys.stdout
    source = DataSource(path=src, format=fmt)
    try:
        kind = kind or data_kind(source)
        got = read_source(source, kind, on_error="skip")
    except LmforgeError as err:
        stream.write(f"{err}\n")
        return 1
    for r in got.rejects:
        stream.write((r.reason if r.reason.startswith(r.source) else f"{r.source}: {r.reason}") + "\n")
    total = len(got.records) + len(got.rejects)
    if got.rejects:
        stream.write(f"{src}: {len(got.rejects):,} of {total:,} records have problems ({_counts(got.rejects)})\n")
        return 1
    if not got.records:
        stream.write(f"{src}: no records found\n")
        return 1
    stream.write(f"{src}: all {total:,} records are valid {kind} records\n")
    return 0


def _counts(rejects: list) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in Counter(r.category for r in rejects).items())


# ---- split -------------------------------------------------------------------------------------------

def run_split(src: str, eval_fraction: float, seed: int, out: Path) -> int:
    """train.jsonl and eval.jsonl in `out`: the rows as they are, seeded, each keeping file order."""
    if not 0 < eval_fraction < 1:
        raise LmforgeError(f"--eval-fraction {eval_fraction}: expected a fraction between 0 and 1 (e.g. 0.05)")
    rows = [row for _, row in iter_rows(DataSource(path=src))]  # an unreadable row raises, naming its line
    chosen = eval_indices(len(rows), eval_fraction, seed)
    train = [json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for i, r in enumerate(rows) if i not in chosen]
    evaluation = [json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for i, r in enumerate(rows) if i in chosen]
    _write_atomic(out / "train.jsonl", "".join(train))
    _write_atomic(out / "eval.jsonl", "".join(evaluation))
    print(f"lmforge: {len(train):,} rows to {out / 'train.jsonl'}, {len(evaluation):,} to {out / 'eval.jsonl'} "
          f"(seed {seed})", file=sys.stderr)
    return 0


def _plain(value: Any) -> Any:
    """JSON for what Parquet rows hold besides plain values (numpy arrays and scalars, timestamps, bytes)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise LmforgeError(f"cannot write {path} ({err.strerror}); give a writable path") from None
