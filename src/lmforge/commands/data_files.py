"""`lmforge data convert | validate | split`: the chores around a data file (`data stats` is in stats.py).

- convert IN OUT --to messages: any readable data (alpaca, sharegpt, messages, preference, KTO; JSON
  Lines, JSON, Parquet, CSV, a directory or glob) as OpenAI messages JSON Lines. Preference data
  becomes {"prompt": [...], "chosen": [...], "rejected": [...]}; KTO data {"prompt", "completion", "label"}.
- validate IN: every problem with its file:line; exit status 1 when there is any.
- split IN: train.jsonl and eval.jsonl in --out, rows unchanged, chosen as `data.eval.fraction` with
  the same seed would choose them from the same rows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from lmforge.config.settings import Source
from lmforge.console import say
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Text
from lmforge.data.sources.files import source_parts
from lmforge.data.sources.mixing import eval_indices
from lmforge.data.sources.problems import by_category, counts_text
from lmforge.data.sources.read import iter_rows, read_source
from lmforge.errors import LmforgeError

KIND_BY_FORMAT = {"text": "text", "preference": "preference", "kto": "kto"}
KIND_KEYS = ("chosen", "rejected", "label", "text", "messages", "conversations", "instruction", "prompt")


# ---- convert -----------------------------------------------------------------------------------------


def run_convert(src: str, dst: Path, to: str = "messages", fmt: str = "auto", on_error: str = "strict") -> int:
    if to != "messages":
        raise LmforgeError(f"--to {to}: the only target format is messages (OpenAI messages JSON Lines)")
    source = Source(path=src, format=fmt)
    kind = data_kind(source)
    if kind == "text":
        raise LmforgeError(
            f"{src}: plain text has no roles to turn into messages; it is already the text format "
            "(for chat data, give --format alpaca, sharegpt, ...)"
        )
    got = read_source(source, kind, on_error=on_error)
    lines = [json.dumps(as_messages(record), ensure_ascii=False) + "\n" for record in got.records]
    _write_atomic(dst, "".join(lines))
    note = ""
    if got.rejects:
        rejects = dst.with_name(dst.name + ".rejects.jsonl")
        _write_atomic(
            rejects,
            "".join(
                json.dumps({"source": r.source, "reason": r.reason, "raw": r.raw}, ensure_ascii=False, default=str)
                + "\n"
                for r in got.rejects
            ),
        )
        note = (
            f"; skipped {len(got.rejects):,} bad records ({counts_text(by_category(got.rejects))}), listed in {rejects}"
        )
    say(f"lmforge: wrote {len(got.records):,} {kind} records to {dst} as messages{note}")
    return 0


def data_kind(source: Source) -> str:
    """The record kind a file holds: by its format, else by the keys of its first readable row."""
    if source.format in KIND_BY_FORMAT:
        return KIND_BY_FORMAT[source.format]
    for _, rows in source_parts(source):
        row = next((obj for _, obj in rows if isinstance(obj, dict)), None)
        if row is not None:
            keys = {key for key in KIND_KEYS if source.columns.get(key, key) in row}
            if {"chosen", "rejected"} <= keys:
                return "preference"
            if "label" in keys:
                return "kto"
            if "text" in keys and not keys & {"messages", "conversations", "instruction", "prompt"}:
                return "text"
            return "conversation"
    return "conversation"


def as_messages(record) -> dict[str, Any]:
    """One record in OpenAI messages shape (preference and KTO in the conversational shape TRL reads)."""
    if isinstance(record, Conversation):
        return _with_tools({"messages": [_message(m) for m in record.messages]}, record.tools)
    if isinstance(record, PreferencePair):
        return _with_tools(
            {
                "prompt": _dicts(record.prompt),
                "chosen": [record.chosen.as_dict()],
                "rejected": [record.rejected.as_dict()],
            },
            record.tools,
        )
    if isinstance(record, KTOExample):
        return {"prompt": _dicts(record.prompt), "completion": [record.completion.as_dict()], "label": record.label}
    if isinstance(record, Text):
        return {"text": record.text}
    raise TypeError(f"not a record: {type(record).__name__}")


def _message(message: Message) -> dict[str, Any]:
    """The message as a dict; a turn left untrained keeps LLaMA-Factory's loss_weight 0, which the reader reads."""
    out = message.as_dict()
    if message.trained is False:
        out["loss_weight"] = 0.0
    return out


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
    source = Source(path=src, format=fmt)
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
        stream.write(
            f"{src}: {len(got.rejects):,} of {total:,} records have problems "
            f"({counts_text(by_category(got.rejects))})\n"
        )
        return 1
    if not got.records:
        stream.write(f"{src}: no records found\n")
        return 1
    stream.write(f"{src}: all {total:,} records are valid {kind} records\n")
    return 0


# ---- split -------------------------------------------------------------------------------------------


def run_split(src: str, eval_fraction: float, seed: int, out: Path) -> int:
    """train.jsonl and eval.jsonl in `out`: the rows as they are, seeded, each keeping file order."""
    if not 0 < eval_fraction < 1:
        raise LmforgeError(f"--eval-fraction {eval_fraction}: expected a fraction between 0 and 1 (e.g. 0.05)")
    rows = [row for _, row in iter_rows(Source(path=src))]  # an unreadable row raises, naming its line
    chosen = eval_indices(len(rows), eval_fraction, seed)
    train = [json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for i, r in enumerate(rows) if i not in chosen]
    evaluation = [json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for i, r in enumerate(rows) if i in chosen]
    _write_atomic(out / "train.jsonl", "".join(train))
    _write_atomic(out / "eval.jsonl", "".join(evaluation))
    say(
        f"lmforge: {len(train):,} rows to {out / 'train.jsonl'}, {len(evaluation):,} to {out / 'eval.jsonl'} "
        f"(seed {seed})"
    )
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
