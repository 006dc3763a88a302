"""Reading JSON Lines sources inside the encoding processes, so that this process never holds the records.

When the recipe takes every record of its sources once, in file order (no mixing key, no eval fraction),
and every file of the sources is JSON Lines, reading everything here before the workers encode would only
add a step that runs on one core while the others wait. Instead each file is cut into byte ranges at line
ends (`plan_sources`), and each worker reads, parses (`readers.parse_rows`) and encodes
(`encode.encode_chunk`) one range at a time, after screening the records (screen.py: over-long text cut,
special-token strings counted), sending back flat arrays, the rows it rejected, how many records it read and
what screening found. Only the first lines of a file whose format is told by its records (format: auto)
are read here, up to the first record that tells it, as `read_source` does; they are encoded here, first.

Every stage streams this way. What comes out is what `read_source` then `workers.encode_records` give: the same
records with the same `file:line`, the same rejects in the same order, the same examples. A source's bad records
raise (strict) once its last range is read. Encoding stops after the first range holding a record that cannot be
encoded, or a bad record (strict); reading goes on to the end, so that bad records of any source are
still reported first, as when reading comes first. tests/data/build/test_stream.py compares both ways.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.config.settings import DataSettings, Source
from lmforge.console import say
from lmforge.data.build.encode import EncodedChunk, EncodeSettings, encode_chunk
from lmforge.data.build.screen import Screened, screen
from lmforge.data.build.workers import collector_paused, encode_paused, pool_context, processes_for, worker_pool
from lmforge.data.records import Record
from lmforge.data.sources.files import jsonl_range_rows, line_bounds, resolve_files
from lmforge.data.sources.formats import FORMATS
from lmforge.data.sources.mixing import source_labels
from lmforge.data.sources.problems import Reject
from lmforge.data.sources.read import check_read, fixed_format, parse_rows
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

MIN_RANGE_BYTES = 1 << 14
MAX_RANGE_BYTES = 1 << 19  # ~500 chat records of ~1 KB: one tokenizer call each
RANGES_PER_WORKER = 4


@dataclass(frozen=True)
class Range:
    """Bytes [start, stop) of a JSON Lines file, from line `first_line`, parsed as format `fmt`."""

    source: int  # index of the source it belongs to
    path: str
    start: int
    stop: int
    first_line: int
    fmt: str


@dataclass
class Held:
    """The first lines of a file, read here until one told the format."""

    source: int
    records: list[Record]
    rejects: list[Reject]
    unread: Counter = field(default_factory=Counter)  # keys left out of training -> records that had them


@dataclass
class Failed:
    """A source that cannot be read at all (its format does not fit the stage): raised when its turn comes."""

    source: int
    error: LmforgeError


Task = Range | Held | Failed


@dataclass
class Streamed:
    """The sources read and encoded: chunks in order, bad records (in order), records per source label, what
    screening found."""

    chunks: list[EncodedChunk] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    taken: dict[str, int] = field(default_factory=dict)
    screened: Screened = field(default_factory=Screened)


def streamable(sources: list[Source], data: DataSettings) -> bool:
    """Whether `encode_sources` can read the sources: local JSON Lines files only, every record taken once, no
    eval fraction to draw (a missing or unreadable path is left for the reader to report)."""
    if data.eval_fraction is not None:
        return False
    if any(s.hub or not s.path or s.mix_key() for s in sources):
        return False
    try:
        return all(f.suffix.lower() == ".jsonl" for s in sources for f in resolve_files(s.path))
    except (LmforgeError, OSError):  # the reader gives the message the user should see
        return False


def encode_sources(
    tokenizer: Tokenizer, sources: list[Source], settings: EncodeSettings, workers: int, on_error: str
) -> Streamed:
    """Read and encode every record of the sources in order (module docstring); bad records raise (strict)."""
    kind = settings.kind
    tasks, lines = plan_sources(sources, kind, on_error, workers)
    out = Streamed()
    counts = [0] * len(sources)
    pending = [[] for _ in sources]  # the rejects of each source, until its last task
    unread = [Counter() for _ in sources]  # the keys each source's format left out, as read_source counts them
    last_task = {task.source: k for k, task in enumerate(tasks)}
    encoding = True
    n_workers = processes_for(lines, workers)
    if n_workers > 1:
        say(f"lmforge: data: reading and encoding {lines:,} lines in {n_workers} processes")
    with _ranges(
        tokenizer, sources, kind, settings, on_error, [t for t in tasks if isinstance(t, Range)], n_workers
    ) as (results, stop):
        for k, task in enumerate(tasks):
            if isinstance(task, Failed):
                raise task.error
            if isinstance(task, Held):
                out.screened.add(screen(tokenizer, task.records, settings.max_length))
                chunk = encode_paused(tokenizer, task.records, settings) if encoding and task.records else None
                rejects, n = task.rejects, len(task.records)
                unread[task.source].update(task.unread)
            else:
                chunk, rejects, n, screened, left_out = next(results)
                out.screened.add(screened)
                unread[task.source].update(left_out)
            counts[task.source] += n
            pending[task.source].extend(rejects)
            if encoding and chunk is not None:
                out.chunks.append(chunk)
                if on_error == "strict" and (chunk.errors or rejects):
                    encoding = False
                    stop()
            if last_task.get(task.source) == k:
                check_read(
                    sources[task.source], counts[task.source], pending[task.source], on_error, unread[task.source]
                )
                out.rejects.extend(pending[task.source])
    out.taken = dict(zip(source_labels(sources), counts))
    return out


def plan_sources(sources: list[Source], kind: str, on_error: str, workers: int) -> tuple[list[Task], int]:
    """(the tasks in order: for each file its held first lines, then its ranges; about how many lines in all).
    Every source has a task, so that each is checked in its turn (one with no record is an error)."""
    files = [[*resolve_files(source.path)] for source in sources]
    total = sum(path.stat().st_size for paths in files for path in paths)
    size = max(MIN_RANGE_BYTES, min(MAX_RANGE_BYTES, total // max(1, workers * RANGES_PER_WORKER)))
    tasks: list[Task] = []
    lines = 0
    for i, (source, paths) in enumerate(zip(sources, files)):
        first = len(tasks)
        try:
            for path in paths:
                got, n = _plan_file(source, i, path, kind, on_error, size)
                tasks.extend(got)
                lines += n
        except LmforgeError as err:  # as read_source raises it: when this source's turn comes
            del tasks[first:]
            tasks.append(Failed(i, err))
        if len(tasks) == first:
            tasks.append(Held(i, [], []))
    return tasks, lines


def _plan_file(source: Source, index: int, path: Path, kind: str, on_error: str, size: int) -> tuple[list[Task], int]:
    """One file's tasks: its first lines read here until one tells the format (format: auto), then ranges of
    about `size` bytes that end at line ends; and how many lines it has."""
    if path.stat().st_size == 0:
        return [], 0
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        fmt, start, line, tasks = fixed_format(source, kind), 0, 1, []
        if fmt is None:
            held = Held(index, [], [])
            tasks.append(held)
            for at, end in line_bounds(data):
                rows = jsonl_range_rows(path, at, end, line)
                fmt, unknown = parse_rows(rows, None, source, kind, on_error, held.records, held.rejects, held.unread)
                start, line = end, line + 1
                if unknown:  # strict: the rest of the file is not read
                    return tasks, line - 1
                if fmt is not None:
                    break
        lines = line - 1
        while start < len(data):
            newline = data.find(b"\n", start + size - 1)
            stop = len(data) if newline < 0 else newline + 1
            tasks.append(Range(index, str(path), start, stop, line, fmt.name))
            count = data[start:stop].count(b"\n") + (data[stop - 1] != 10)  # a last line without its newline
            start, line, lines = stop, line + count, lines + count
    return tasks, lines


@contextlib.contextmanager
def _ranges(
    tokenizer: Tokenizer,
    sources: list[Source],
    kind: str,
    settings: EncodeSettings,
    on_error: str,
    ranges: list[Range],
    n_workers: int,
):
    """(the ranges' results in order, read and encoded in n_workers processes or here; a function that stops
    their encoding from the next range on)."""
    state = (tokenizer, sources, kind, settings, on_error)
    if n_workers <= 1 or len(ranges) <= 1:
        stop = threading.Event()
        yield (_read_range(task, *state, stop) for task in ranges), stop.set
        return
    stop = pool_context().Event()
    with worker_pool(n_workers, _init_worker, (*state, stop)) as pool:
        yield pool.imap(_read_range_in_worker, ranges), stop.set


_WORKER: list = []


def _init_worker(*state) -> None:
    _WORKER[:] = state


def _read_range_in_worker(task: Range) -> tuple[EncodedChunk | None, list[Reject], int, Screened, Counter]:
    return _read_range(task, *_WORKER)


def _read_range(
    task: Range, tokenizer: Tokenizer, sources: list[Source], kind: str, settings: EncodeSettings, on_error: str, stop
) -> tuple[EncodedChunk | None, list[Reject], int, Screened, Counter]:
    """(the range's records encoded, or None once encoding has stopped; its rejects; how many records; what
    screening found in them; the keys its format left out)."""
    records: list[Record] = []
    rejects: list[Reject] = []
    unread: Counter = Counter()
    with collector_paused():
        rows = jsonl_range_rows(Path(task.path), task.start, task.stop, task.first_line)
        parse_rows(rows, FORMATS[task.fmt], sources[task.source], kind, on_error, records, rejects, unread)
        screened = screen(tokenizer, records, settings.max_length)
        chunk = None if stop.is_set() else encode_chunk(tokenizer, records, settings)
    return chunk, rejects, len(records), screened, unread
