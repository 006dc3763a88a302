"""Read a data source into canonical records, strictly by default.

`read_source` walks the rows of a source (files.py: JSON Lines, JSON, Parquet, CSV, a directory, a glob
or a hub dataset), picks the format (formats.py: given, or told by the keys of each file's first
readable record) and parses every row into the record kind the stage reads (records.KIND_BY_STAGE). Every bad
row is reported with where it is (`file:line`, `file: record N`, `file: row N`), the field and what was
expected: `on_error="strict"` raises an LmforgeError listing the first MAX_PROBLEMS of them,
`on_error="skip"` returns them as Reject records for the caller to count and write out. Nothing is
dropped without a Reject. Keys a format does not read are refused where that would change the training, else
counted and said (keys.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config.settings import Source
from lmforge.console import say
from lmforge.data.records import KIND_BY_STAGE, KINDS, Record
from lmforge.data.sources.files import source_parts
from lmforge.data.sources.formats import FORMATS, Format, check_source, detect, parse
from lmforge.data.sources.keys import check_keys, unread_keys, unread_line
from lmforge.data.sources.problems import (
    MALFORMED,
    MAX_PROBLEMS,
    RecordProblem,
    Reject,
    UnknownFormat,
    kind_of,
    problems_error,
)
from lmforge.errors import LmforgeError

ON_ERROR = ("strict", "skip")


@dataclass
class SourceRead:
    records: list[Record]
    rejects: list[Reject] = field(default_factory=list)
    unread: Counter = field(default_factory=Counter)  # keys left out of training -> how many records had them


def read_source(source: Source, kind: str, on_error: str = "strict", base_dir: Path | None = None) -> SourceRead:
    """All records of one source; bad rows raise (strict) or come back as rejects (skip).

    `kind` is a record kind (text, conversation, preference, kto) or a stage name (pt, sft, ...).
    Relative paths resolve against `base_dir` (default: the current directory).
    """
    kind = KIND_BY_STAGE.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)} or a stage {', '.join(KIND_BY_STAGE)}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    fixed = fixed_format(source, kind)
    got = SourceRead(records=[])
    for _, rows in source_parts(source, base_dir):
        parse_rows(rows, fixed, source, kind, on_error, got.records, got.rejects, got.unread)
    check_read(source, len(got.records), got.rejects, on_error, got.unread)
    return got


def read_records(sources: list[Source], kind: str, on_error: str = "strict") -> list[Record]:
    """The records of concrete sources (no registry names), in order; bad ones raise unless skipped."""
    records: list[Record] = []
    for source in sources:
        records.extend(read_source(source, kind, on_error=on_error).records)
    return records


def fixed_format(source: Source, kind: str) -> Format | None:
    """The source's given format (checked against the kind), or None for format: auto."""
    fixed = None if source.format == "auto" else FORMATS[source.format]
    if fixed is not None:
        check_source(source, fixed, kind)
    return fixed


def parse_rows(
    rows: Iterable[tuple[str, Any]],
    fmt: Format | None,
    source: Source,
    kind: str,
    on_error: str,
    records: list[Record],
    rejects: list[Reject],
    unread: Counter | None = None,
) -> tuple[Format | None, bool]:
    """Parse the rows of one file into `records`, bad ones into `rejects`, and count in `unread` the keys left out
    of training (keys.py). `fmt` None: told by the first readable record. Returns (the format, whether the file
    must be read no further: strict and unknown)."""
    for where, obj in rows:
        try:
            row = _object(obj)
            fmt = fmt or detect(row, source, kind)
            check_keys(row, fmt, source, kind)
            record = parse(row, fmt, source, kind)
        except UnknownFormat as err:
            rejects.append(_reject(where, err, obj, on_error))
            if on_error == "strict":
                return fmt, True  # every later record of this file would fail the same way
            continue
        except RecordProblem as err:
            rejects.append(_reject(where, err, obj, on_error))
            continue
        record.source = where
        records.append(record)
        if unread is not None:
            unread.update(unread_keys(row, fmt, source, kind))
    return fmt, False


def check_read(source: Source, count: int, rejects: list[Reject], on_error: str, unread: Counter | None = None) -> None:
    """Raise when a source read strictly had bad records, or when it gave no record (`count` records read); say
    the keys left out of training (`unread`), if any."""
    if rejects and on_error == "strict":
        raise problems_error(source.label(), rejects, count + len(rejects))
    if not count:
        raise _nothing_read(source, rejects)
    if unread:
        say(unread_line(source.label(), unread))


def iter_rows(source: Source, base_dir: Path | None = None) -> Iterator[tuple[str, dict]]:
    """(where, raw row) for every row of a source, lazily; an unreadable row raises LmforgeError."""
    for _, rows in source_parts(source, base_dir):
        for where, obj in rows:
            try:
                yield where, _object(obj)
            except RecordProblem as err:
                raise LmforgeError(f"{where}: {err}") from None


def _object(obj: Any) -> dict:
    if isinstance(obj, RecordProblem):
        raise obj
    if not isinstance(obj, dict):
        raise RecordProblem(f"the record is {kind_of(obj)}; expected a JSON object", MALFORMED)
    return obj


def _reject(where: str, err: RecordProblem, obj: Any, on_error: str) -> Reject:
    raw = None if on_error == "strict" else (err.raw if isinstance(obj, RecordProblem) else obj)
    return Reject(source=where, reason=str(err), raw=raw, category=err.category)


def _nothing_read(source: Source, rejects: list[Reject]) -> LmforgeError:
    if not rejects:
        return LmforgeError(
            f"{source.label()}: the data holds no records; expected one JSON object per line (or a "
            "list of objects, a Parquet table, a CSV with a header)"
        )
    first = "\n  ".join(f"{r.source}: {r.reason}" for r in rejects[:MAX_PROBLEMS])
    return LmforgeError(
        f"{source.label()}: all {len(rejects)} records were rejected, so nothing is left to train "
        f"on; the first problems:\n  {first}"
    )
