"""Records to token ids and labels: batched, in parallel processes, with the truncation policy applied.

Records are cut into chunks in file order; each chunk is encoded in a worker process (or in this
process when the input is small or `data.workers` is 1) and the chunks come back in order, so the
result does not depend on the number of workers. Forked workers inherit the tokenizer and the records
(a task is a range of record indices: nothing is pickled on the way there, and only flat arrays come
back). A chunk's conversations are rendered one by one and tokenised in one call
(`masks.encode_batch`), with the cyclic garbage collector paused meanwhile.

SFT: each conversation goes through `masks.encode_with_policy` (one sample, or one per assistant turn
for templates that break the prefix property). A sample longer than `data.max_length` is then
- `truncation: drop`: dropped, and counted;
- `truncation: cut`: shortened so its trained tokens survive: first the prompt is shortened by
  dropping the oldest turns of history (a turn = a user message and everything up to the next user
  message; the system message is kept), re-rendered and re-encoded, taking the fewest dropped turns
  that fit; when even the last turn alone is too long, its end is cut at max_length.
A sample left with no trained token is dropped, counted by reason. A record the template cannot
encode is an error (strict) or a reject (`on_error: skip`).
Pretraining: documents are tokenised here, in parallel; `text.py` makes blocks or packed bins.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmforge.data import masks
from lmforge.data.masks import IGNORE_INDEX, Encoded
from lmforge.data.records import Conversation, Message
from lmforge.data.text import tokenize_documents
from lmforge.errors import LmforgeError

PARALLEL_MIN_RECORDS = 256  # fewer records than this are encoded in this process: forking would cost more
MAX_CHUNK = 512
MAX_WORKERS = 8


@dataclass(frozen=True)
class EncodeSettings:
    stage: str
    template: str | None
    max_length: int
    train_on: str = "all_assistant"
    split_turns: str = "auto"
    truncation: str = "cut"


@dataclass
class Sample:
    """One encoded sample and what happened to it on the way."""

    encoded: Encoded
    source: str
    cut: str | None = None  # "history" (older turns dropped), "end" (end cut), or None
    dropped: str | None = None  # why training drops it, if it does


@dataclass
class EncodedChunk:
    """Samples of a run of records as flat arrays, with the counts of what happened to them."""

    input_ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    cut_history: int = 0  # kept samples shortened by dropping history turns (some also cut at the end)
    cut_end: int = 0  # kept samples whose end was cut
    split: int = 0  # conversations encoded as one sample per assistant turn
    reasons: Counter = field(default_factory=Counter)  # dropped samples by reason
    errors: list[tuple[str, str, Any]] = field(default_factory=list)  # (source, reason, raw) records not encoded

    @property
    def truncated(self) -> int:
        return self.cut_history + self.cut_end


def default_workers(requested: int | None) -> int:
    """data.workers, else the CPUs this process may use, at most MAX_WORKERS."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return requested or max(1, min(usable, MAX_WORKERS))


def processes_for(n_records: int, workers: int) -> int:
    """Worker processes for n records: 1 (this process) for small inputs, else up to `workers`."""
    if n_records < PARALLEL_MIN_RECORDS:
        return 1
    return max(1, min(workers, n_records // (PARALLEL_MIN_RECORDS // 2)))


def encode_records(tokenizer, records: list, settings: EncodeSettings, workers: int = 1,
                   stop_on_error: bool = True) -> list[EncodedChunk]:
    """The records encoded chunk by chunk, in order. With stop_on_error, encoding stops after the
    first chunk holding a record that cannot be encoded (the caller raises with the problems)."""
    if not records:
        return []
    n_workers = processes_for(len(records), workers)
    if n_workers == 1:
        return _run_in_process(tokenizer, records, settings, stop_on_error)
    size = max(16, min(MAX_CHUNK, -(-len(records) // (n_workers * 4))))
    ranges = [(i, min(i + size, len(records))) for i in range(0, len(records), size)]
    out: list[EncodedChunk] = []
    # forked workers inherit the tokenizer and the records (nothing pickled); tasks are index ranges
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


def _run_in_process(tokenizer, records: list, settings: EncodeSettings, stop_on_error: bool) -> list[EncodedChunk]:
    out = []
    for i in range(0, len(records), MAX_CHUNK):
        out.append(encode_chunk(tokenizer, records[i:i + MAX_CHUNK], settings))
        if stop_on_error and out[-1].errors:
            break
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer, settings: EncodeSettings, records: list) -> None:
    gc.freeze()  # what the worker inherits lives as long as it does: the collector need not scan it
    _WORKER.update(tokenizer=tokenizer, settings=settings, records=records)


def _encode_range_in_worker(bounds: tuple[int, int]) -> EncodedChunk:
    start, stop = bounds
    return encode_chunk(_WORKER["tokenizer"], _WORKER["records"][start:stop], _WORKER["settings"])


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


def encode_chunk(tokenizer, records: list, settings: EncodeSettings) -> EncodedChunk:
    """Encode a run of records into one chunk of flat arrays (pretraining: one document per record)."""
    if settings.stage == "pt":
        return _pack_rows(tokenize_documents(tokenizer, [r.text for r in records]), None)
    with collector_paused():
        return _encode_conversations(tokenizer, records, settings)


def _encode_conversations(tokenizer, records: list[Conversation], settings: EncodeSettings) -> EncodedChunk:
    kept: list[Encoded] = []
    counts, reasons, errors = Counter(), Counter(), []
    batch = masks.encode_batch(tokenizer, settings.template, records, settings.train_on, settings.split_turns)
    for conv, encoded in zip(records, batch):
        try:
            if isinstance(encoded, LmforgeError):
                raise encoded
            samples = _fit(tokenizer, conv, encoded, settings)
        except LmforgeError as err:
            errors.append((conv.source, str(err), {"messages": conv.as_dicts()}))
            continue
        counts["split"] += any(s.encoded.split for s in samples)
        for s in samples:
            if s.dropped:
                reasons[s.dropped] += 1
            else:
                counts[s.cut] += 1
                kept.append(s.encoded)
    chunk = _pack_rows([e.input_ids for e in kept], [e.labels for e in kept])
    chunk.cut_history, chunk.cut_end, chunk.split = counts["history"], counts["end"], counts["split"]
    chunk.reasons, chunk.errors = reasons, errors
    return chunk


def _pack_rows(rows: list[list[int]], labels: list[list[int]] | None) -> EncodedChunk:
    """Rows as flat arrays; labels None: labels are the ids (pretraining documents)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=total)
    lab = ids if labels is None else np.fromiter(itertools.chain.from_iterable(labels), dtype=np.int32, count=total)
    return EncodedChunk(input_ids=ids, labels=lab, lengths=lengths)


def encode_policy(tokenizer, template: str, conv: Conversation, settings: EncodeSettings) -> list[Encoded]:
    """The samples of one conversation as the mask policy says (`masks.encode_with_policy`)."""
    return masks.encode_with_policy(tokenizer, template, conv, settings.train_on, settings.split_turns)


def encode_record(tokenizer, conv: Conversation, settings: EncodeSettings) -> list[Sample]:
    """The samples of one conversation, each within max_length or marked dropped (with why)."""
    return _fit(tokenizer, conv, encode_policy(tokenizer, settings.template, conv, settings), settings)


def _fit(tokenizer, conv: Conversation, encoded: list[Encoded], settings: EncodeSettings) -> list[Sample]:
    """The encoded samples of `conv` with the length policy applied (see the module docstring)."""
    samples = []
    for j, enc in enumerate(encoded):
        sample = Sample(enc, conv.source)
        if len(enc.input_ids) > settings.max_length:
            if settings.truncation == "drop":
                sample.dropped = f"longer than max_length {settings.max_length} (truncation: drop)"
                samples.append(sample)
                continue
            sample = _cut(tokenizer, conv, encoded, j, settings)
        if sample.dropped is None and not _has_trained(sample.encoded.labels):
            sample.dropped = (f"no trained token within max_length {settings.max_length}" if sample.cut
                              else "no trained token")
        samples.append(sample)
    return samples


def _has_trained(labels: list[int]) -> bool:
    return labels[1:].count(IGNORE_INDEX) < len(labels) - 1


def _cut(tokenizer, conv: Conversation, encoded: list[Encoded], j: int, settings: EncodeSettings) -> Sample:
    """Sample j shortened: the fewest oldest history turns dropped that make it fit, else its end cut."""
    target = _target_conversation(conv, encoded, j)
    turns = _turns(target.messages) if target is not None else None
    best, how = encoded[j], "end"
    if turns is not None and len(turns[1]) > 1:
        head, groups = turns
        fitting = _fewest_dropped(tokenizer, target, head, groups, settings)
        if fitting is not None:
            best, how = fitting, "history"
        else:  # even the last turn alone is too long: keep it alone, then cut its end
            shortest = _reencode(tokenizer, target, head, groups[-1:], settings)
            best = shortest or best
    if len(best.input_ids) > settings.max_length:
        m = settings.max_length
        best = _replace(best, best.input_ids[:m], best.labels[:m])
        how = "end"
    return Sample(best, conv.source, cut=how)


def _fewest_dropped(tokenizer, target: Conversation, head: list[Message], groups: list[list[Message]],
                    settings: EncodeSettings) -> Encoded | None:
    """Binary search for the fewest dropped oldest turns whose re-encoding fits max_length."""
    low, high, found = 1, len(groups) - 1, None  # dropping `high` turns keeps only the last one
    while low <= high:
        mid = (low + high) // 2
        enc = _reencode(tokenizer, target, head, groups[mid:], settings)
        if enc is not None and len(enc.input_ids) <= settings.max_length:
            found, high = enc, mid - 1
        else:
            low = mid + 1
    return found


def _reencode(tokenizer, target: Conversation, head: list[Message], groups: list[list[Message]],
              settings: EncodeSettings) -> Encoded | None:
    messages = [*head, *(m for g in groups for m in g)]
    shorter = Conversation(messages=messages, source=target.source, tools=target.tools)
    try:
        return encode_policy(tokenizer, settings.template, shorter, settings)[-1]
    except LmforgeError:  # the template rejects the shortened conversation: fall back to cutting the end
        return None


def _target_conversation(conv: Conversation, encoded: list[Encoded], j: int) -> Conversation | None:
    """The conversation whose last sample is sample j: the whole one, or (one sample per assistant turn)
    the messages through the j-th assistant message. None when samples and turns do not line up."""
    if len(encoded) == 1:
        return conv
    ends = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    if len(ends) != len(encoded):
        return None
    return Conversation(messages=conv.messages[:ends[j] + 1], source=conv.source, tools=conv.tools)


def _turns(messages: list[Message]) -> tuple[list[Message], list[list[Message]]] | None:
    """(leading system messages, turns): each turn opens with a user message. None if the history has
    something before the first user message other than system messages."""
    head = []
    k = 0
    while k < len(messages) and messages[k].role == "system":
        head.append(messages[k])
        k += 1
    if k == len(messages) or messages[k].role != "user":
        return None
    groups: list[list[Message]] = []
    for m in messages[k:]:
        if m.role == "user":
            groups.append([])
        groups[-1].append(m)
    return head, groups


def _replace(enc: Encoded, input_ids: list[int], labels: list[int]) -> Encoded:
    fields = dict(vars(enc))
    fields.update(input_ids=input_ids, labels=labels)
    return type(enc)(**fields)
