"""Rows out of data files: JSON Lines, JSON, Parquet, CSV and plain text; a directory or a glob of them; a hub dataset.

Rows come one at a time, each with where it is: `file:line` for line-based files (JSON Lines, CSV: the
row's first line, text), `file: record N` for a .json list, `file: row N` for Parquet and hub datasets. JSON
Lines, CSV, text and Parquet are read lazily (a line, a row, a batch at a time), so large files stream; a .json
list is parsed whole (use .jsonl or .parquet for large data). A row that cannot be read (bad JSON, a
non-UTF-8 byte, a CSV row of the wrong width) is yielded as a RecordProblem so that the reader lists it
with the others; a file that cannot be read at all raises LmforgeError.

A .txt file is a pretraining corpus read as LLaMA-Factory reads one (through `datasets`' text loader): each line
a document {"text": line}, without its line break; a line break is \n, \r\n or \r. A blank line is no
document (the text loader makes it an empty one, which LLaMA-Factory would train as an end-of-text token alone):
it is skipped, and the count of them said once the file is read.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.config.settings import Source
from lmforge.console import say
from lmforge.data.sources import hub
from lmforge.data.sources.problems import MALFORMED, NOT_UTF8, RecordProblem, kind_of
from lmforge.errors import LmforgeError

EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv", ".txt")
TEXT_FILE = ".txt"  # one document a line
GLOB_CHARS = "*?["
PARQUET_BATCH = 1024
BOM = b"\xef\xbb\xbf"
SKIPPED_NAMES = ("dataset_info.json",)  # a LLaMA-Factory registry beside its data files is not data
CSV_FIELD_LIMIT = 2**31 - 1  # documents in a CSV cell may exceed csv's default 128 KiB

Row = tuple[str, Any]  # (where, the parsed row or a RecordProblem)


def resolve_files(raw: str, base_dir: Path | None = None) -> list[Path]:
    """The data files a `path` names: itself, every data file under a directory, or a glob's matches (sorted)."""
    path = Path(raw).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    kinds = ", ".join(EXTENSIONS)
    if any(c in raw for c in GLOB_CHARS) and not path.exists():
        files = [p for p in map(Path, sorted(glob.glob(str(path), recursive=True))) if _is_data_file(p)]
        if not files:
            raise LmforgeError(
                f"data path {raw} matches no data file (expected names ending in {kinds}); "
                "check the pattern in data.train[].path"
            )
        return _one_kind(files, raw)
    if not path.exists():
        looked = "" if Path(raw).expanduser().is_absolute() else f" (looked for {path.absolute()})"
        raise LmforgeError(f"data file {raw} does not exist{looked}; check data.train / data.eval.path in the recipe")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if _is_data_file(p) and not _hidden(p, path))
        if not files:
            raise LmforgeError(f"data directory {raw} holds no data files; expected files ending in {kinds}")
        return _one_kind(files, raw)
    if path.suffix.lower() not in EXTENSIONS:
        raise LmforgeError(
            f"data file {raw} has extension {path.suffix!r}; expected one of {kinds} (JSON Lines: "
            "one JSON object per line; .json: one list of objects; Parquet; CSV with a header; .txt: one "
            "document a line)"
        )
    return [path]


def _one_kind(files: list[Path], raw: str) -> list[Path]:
    """Plain text and records do not mix under one path: a notes file beside the data would be read as a corpus."""
    text = [f for f in files if f.suffix.lower() == TEXT_FILE]
    if text and len(text) < len(files):
        other = next(f for f in files if f.suffix.lower() != TEXT_FILE)
        raise LmforgeError(
            f"data path {raw} holds plain-text files ({text[0]}: one document a line) and record files ({other}); "
            "keep them in separate folders, or name the files to read with a glob (LLaMA-Factory too wants the "
            "files of a dataset to be of one type)"
        )
    return files


def _is_data_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS and path.name not in SKIPPED_NAMES


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def source_parts(source: Source, base_dir: Path | None = None) -> Iterator[tuple[str, Iterator[Row]]]:
    """(label, rows) for each file of a source, or for its hub dataset; files are checked before any is read."""
    if source.hub:
        yield f"hub:{source.hub}", hub_rows(source)
        return
    if not source.path:
        raise LmforgeError(
            f"dataset {source.label()} has no path or hub id; a registry name must be resolved "
            "through data.registry first"
        )
    for path in resolve_files(source.path, base_dir):
        yield str(path), file_rows(path)


def file_rows(path: Path) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _rows_jsonl(path)
    if suffix == ".json":
        return _rows_json(path)
    if suffix == ".parquet":
        return _rows_parquet(path)
    if suffix == TEXT_FILE:
        return _rows_text(path)
    return _rows_csv(path)


def _decode(raw: bytes) -> str | RecordProblem:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return RecordProblem(
            f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not valid UTF-8; expected "
            "UTF-8 text (re-encode the file)",
            NOT_UTF8,
            raw=raw.decode("utf-8", "backslashreplace"),
        )


def _rows_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            yield from _numbered_line(path, number, raw)


def jsonl_range_rows(path: Path, start: int, stop: int, first_line: int) -> Iterator[Row]:
    """The rows of bytes [start, stop) of a JSON Lines file, as `file_rows` gives them: `start` is the beginning
    of line `first_line` (0 for the file's start) and `stop` the end of a line or of the file."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(stop - start)
    for number, (at, end) in enumerate(line_bounds(data), first_line):
        yield from _numbered_line(path, number, data[at:end])


def _numbered_line(path: Path, number: int, raw: bytes) -> Iterator[Row]:
    yield from _jsonl_line(f"{path}:{number}", raw[3:] if number == 1 and raw.startswith(BOM) else raw)


def line_bounds(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each line of `data` (bytes or a memory map), its newline included, as iterating a binary
    file cuts lines (at b"\\n" only; a last line without one is a line)."""
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start) + 1 or size
        yield start, end
        start = end


def _jsonl_line(where: str, raw: bytes) -> Iterator[Row]:
    line = _decode(raw)
    if isinstance(line, RecordProblem):
        yield where, line
    elif line.strip():
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            text = line.rstrip("\r\n")  # an error at the line's end is past its newline: colno would say 1
            at = f"column {err.pos + 1}" if err.pos < len(text) else f"the end of the line, column {len(text) + 1}"
            yield (
                where,
                RecordProblem(
                    f"not valid JSON ({err.msg} at {at}); expected one JSON object per line",
                    MALFORMED,
                    raw=line.rstrip("\r\n"),
                ),
            )


def _rows_text(path: Path) -> Iterator[Row]:
    """One document a line (the module docstring); blank lines are counted and said, not yielded."""
    blank = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            line = _decode(raw[3:] if number == 1 and raw.startswith(BOM) else raw)
            if isinstance(line, RecordProblem):
                yield f"{path}:{number}", line
                continue
            line = line.removesuffix("\n").removesuffix("\r")
            for text in line.split("\r"):  # a lone \r breaks lines too, as in Python's universal newlines
                if text.strip():
                    yield f"{path}:{number}", {"text": text}
                else:
                    blank += 1
    if blank:
        say(f"lmforge: data: {path}: {blank:,} blank line{'s' if blank != 1 else ''} skipped (one document a line)")


def _rows_json(path: Path) -> Iterator[Row]:
    """A .json file holds one list of records; one holding JSON Lines (as many hub files do) is read as such."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise LmforgeError(
            f"{path}:{line}: byte 0x{data[err.start]:02x} is not valid UTF-8; expected UTF-8 text (re-encode the file)"
        ) from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and err.lineno > 1:
            yield from _rows_jsonl(path)
            return
        raise LmforgeError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno}); expected one list of records"
        ) from None
    if not isinstance(records, list):
        raise LmforgeError(
            f"{path}: holds {kind_of(records)}; expected a list of records (or use .jsonl, one per line)"
        )
    for i, obj in enumerate(records, 1):
        yield f"{path}: record {i}", obj


def _rows_parquet(path: Path) -> Iterator[Row]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise LmforgeError(f"{path}: not a readable Parquet file ({err}); expected Parquet data") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}: row {number}", row


def _rows_csv(path: Path) -> Iterator[Row]:
    """Rows of a CSV file with a header line, as {column: text}; a row may span lines inside quotes."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    bad: dict[int, RecordProblem] = {}
    with path.open("rb") as f:
        reader = csv.reader(_csv_lines(f, bad))
        try:
            header = next(reader, None)
            if header is None:
                return
            if bad:
                raise LmforgeError(f"{path}:1: (the header) {next(iter(bad.values()))}")
            start = reader.line_num + 1
            for cells in reader:
                where, lines, first = f"{path}:{start}", range(start, reader.line_num + 1), start
                start = reader.line_num + 1
                problems = [(n, bad.pop(n)) for n in lines if n in bad]
                if problems:
                    n, problem = problems[0]
                    if n != first:
                        problem = RecordProblem(f"line {n}: {problem}", NOT_UTF8, raw=problem.raw)
                    yield where, problem
                elif len(cells) != len(header) and any(c.strip() for c in cells):
                    yield (
                        where,
                        RecordProblem(
                            f"the row has {len(cells)} fields; expected {len(header)} as in the "
                            f"header ({', '.join(header)})",
                            MALFORMED,
                            raw=cells,
                        ),
                    )
                elif cells:
                    yield where, dict(zip(header, cells))
        except csv.Error as err:
            raise LmforgeError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None


def _csv_lines(f, bad: dict[int, RecordProblem]) -> Iterator[str]:
    """Decoded lines; a line with a bad byte is noted in `bad` (by line number) and passed on with replacements."""
    for number, raw in enumerate(f, 1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[3:]
        line = _decode(raw)
        if isinstance(line, RecordProblem):
            bad[number] = line
            line = raw.decode("utf-8", "replace")
        yield line


def hub_rows(source: Source) -> Iterator[Row]:
    """A hub dataset's rows through datasets.load_dataset (needs network access or the datasets cache)."""
    hub.check_dataset("data.train[].hub", source.hub)
    import datasets

    name = source.hub + (f"/{source.subset}" if source.subset else "") + f"[{source.split}]"
    try:
        rows = datasets.load_dataset(source.hub, source.subset, split=source.split, streaming=False)
    except Exception as err:  # noqa: BLE001 - hub failures come in many types; all mean the same to the user
        raise LmforgeError(
            f"cannot load hub dataset {name}: {type(err).__name__}: {err}; check data.train[].hub, "
            "subset and split, and network access (or download the files and use path)"
        ) from None
    for number, row in enumerate(rows, 1):
        yield f"hub:{name}: row {number}", row
