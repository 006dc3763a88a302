"""Encoding in parallel processes: records cut into chunks in file order, each chunk encoded in a worker (or in
this process when the input is small or `data.workers` is 1), the chunks back in order, so the result does not
depend on the number of workers.

Forked workers inherit the tokenizer and the records: a task is a range of record indices, nothing is pickled on
the way there, and only flat arrays come back. The cyclic garbage collector is paused meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import warnings
from typing import TYPE_CHECKING, Any

from lmforge.data.build.encode import EncodedChunk, EncodeSettings, encode_chunk

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

PARALLEL_MIN_RECORDS = 256  # fewer records than this are encoded in this process: forking would cost more
MAX_CHUNK = 512
MAX_WORKERS = 8


def default_workers(requested: int | None) -> int:
    """data.workers, else the CPUs this process may use, at most MAX_WORKERS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return requested or max(1, min(usable, MAX_WORKERS))


def processes_for(n_records: int, workers: int) -> int:
    """Worker processes for n records: 1 (this process) for small inputs, else up to `workers`."""
    if n_records < PARALLEL_MIN_RECORDS:
        return 1
    return max(1, min(workers, n_records // (PARALLEL_MIN_RECORDS // 2)))


def encode_records(
    tokenizer: Tokenizer, records: list, settings: EncodeSettings, workers: int = 1, stop_on_error: bool = True
) -> list[EncodedChunk]:
    """The records encoded chunk by chunk, in order. With stop_on_error, encoding stops after the first chunk
    holding a record that cannot be encoded (the caller raises with the problems)."""
    if not records:
        return []
    n_workers = processes_for(len(records), workers)
    if n_workers == 1:
        return _run_in_process(tokenizer, records, settings, stop_on_error)
    size = max(16, min(MAX_CHUNK, -(-len(records) // (n_workers * 4))))
    ranges = [(i, min(i + size, len(records))) for i in range(0, len(records), size)]
    out: list[EncodedChunk] = []
    with worker_pool(n_workers, _init_worker, (tokenizer, settings, records)) as pool:
        for chunk in pool.imap(_encode_range_in_worker, ranges):
            out.append(chunk)
            if stop_on_error and chunk.errors:
                break
    return out


def pool_context() -> multiprocessing.context.BaseContext:
    """fork where the platform has it (workers inherit what this process holds), else spawn."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


@contextlib.contextmanager
def worker_pool(n_workers: int, initializer, initargs: tuple):
    """A pool of encoding processes, terminated on leaving (results are taken before)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the workers use none of them
        pool = pool_context().Pool(n_workers, initializer, initargs)
    with pool:
        yield pool


@contextlib.contextmanager
def collector_paused():
    """Reading and encoding allocate millions of small objects (records, token offsets) that live on or are
    freed by reference counting; the cyclic collector, run over and over meanwhile (each full pass over a
    heap that keeps growing), found nothing and cost ~15% of encoding and ~40% of reading."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_paused(tokenizer: Tokenizer, records: list, settings: EncodeSettings) -> EncodedChunk:
    """`encode_chunk` with the collector paused."""
    with collector_paused():
        return encode_chunk(tokenizer, records, settings)


def _run_in_process(
    tokenizer: Tokenizer, records: list, settings: EncodeSettings, stop_on_error: bool
) -> list[EncodedChunk]:
    out = []
    for i in range(0, len(records), MAX_CHUNK):
        out.append(encode_paused(tokenizer, records[i : i + MAX_CHUNK], settings))
        if stop_on_error and out[-1].errors:
            break
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer: Tokenizer, settings: EncodeSettings, records: list) -> None:
    gc.freeze()  # what the worker inherits lives as long as it does: the collector need not scan it
    _WORKER.update(tokenizer=tokenizer, settings=settings, records=records)


def _encode_range_in_worker(bounds: tuple[int, int]) -> EncodedChunk:
    start, stop = bounds
    return encode_paused(_WORKER["tokenizer"], _WORKER["records"][start:stop], _WORKER["settings"])
