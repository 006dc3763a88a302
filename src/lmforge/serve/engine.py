"""One model, one worker thread, continuous batching: the scheduler behind every request to that model.

Requests wait in a bounded queue. Between two decode steps the worker admits waiting sequences while the batch
has room: each prompt is prefilled alone (batch of one, no padding, so its cache is exactly that of a request
run alone), its first token picked, and its cache stacked under the running rows (serve/kv.py). A decode step
feeds every row its last token at its own position with one forward call; each row picks its next token with
its own settings (serve/pick.py); rows that end leave the batch at once, freeing their place.

Why our own loop on transformers' DynamicCache and `model.forward` rather than transformers' continuous
batching (`generate_batch` / ContinuousBatchingManager in transformers 5): that manager takes one
GenerationConfig for the whole batch (temperature, top-p, sampling on or off) and one random stream, so
per-request settings and seeds, and log-probabilities, would need its internals; it also lays requests out in a
paged cache built for GPU attention kernels. A DynamicCache with left padding, attention masks and per-row
position ids runs any causal LM transformers loads, on any device, and gives each row the logits it would get
alone, so a batched greedy reply equals the same request run by itself (tests/serve checks it).
"""

from __future__ import annotations

import collections
import threading
import traceback

import torch
from transformers import DynamicCache

from lmforge.console import say
from lmforge.serve.kv import Rows, batchable
from lmforge.serve.pick import pick
from lmforge.serve.sequence import Sequence


class QueueFull(Exception):
    """More requests wait than the queue holds; the client should retry later."""


class Engine:
    def __init__(self, model, max_batch: int, max_queue: int, context: int):
        self.model, self.max_batch, self.max_queue, self.context = model, max_batch, max_queue, context
        self._waiting: collections.deque[list[Sequence]] = collections.deque()
        self._rows = Rows()
        self._active: list[Sequence] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lmforge-engine", daemon=True)
        self._checked_batchable = False
        self._peak = self._dropped = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def submit(self, group: list[Sequence]) -> None:
        """Queue one request's sequences (its n choices), or raise QueueFull."""
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull
            self._waiting.append(list(group))
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        with self._wake:
            return {
                "active": len(self._active),
                "waiting": len(self._waiting),
                "max_batch": self.max_batch,
                "peak_batch": self._peak,  # the most rows one decode step has run
                "dropped": self._dropped,  # sequences left unfinished because their client went away
            }

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._active):
                    self._wake.wait()
                if self._stopping:
                    return
            self._admit()
            if self._active:
                self._step()

    def _admit(self) -> None:
        """Prefill waiting sequences into the batch while it has room; cancelled ones are dropped unseen."""
        while len(self._active) < self.max_batch:
            with self._wake:
                if not self._waiting:
                    return
                group = self._waiting[0]
                seq = group.pop(0)
                if not group:
                    self._waiting.popleft()
            if seq.cancelled:
                self._dropped += 1
            else:
                self._prefill(seq)

    @torch.no_grad()
    def _prefill(self, seq: Sequence) -> None:
        try:
            ids = torch.tensor([seq.prompt], device=self.model.device)
            cache = DynamicCache()
            out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
            self._check_batchable(out.past_key_values)
            ((token, logprob),) = pick(out.logits[:, -1], [seq])
            if seq.add(token, logprob, self.context - len(seq.prompt)):
                return
            self._rows.add(out.past_key_values)
            self._active.append(seq)
        except Exception as err:  # a failure of one request fails that request, never the server
            _report(err)
            seq.fail(f"generation failed: {type(err).__name__}: {err}")

    def _check_batchable(self, cache) -> None:
        if self._checked_batchable:
            return
        self._checked_batchable = True
        if self.max_batch > 1 and not batchable(cache):
            say("lmforge serve: this model's cache has sliding-window or recurrent layers; one request at a time")
            self.max_batch = 1

    @torch.no_grad()
    def _step(self) -> None:
        rows = self._active
        self._peak = max(self._peak, len(rows))
        try:
            mask = self._rows.grow()
            out = self.model(
                input_ids=torch.tensor([[s.last] for s in rows], device=mask.device),
                attention_mask=mask,
                position_ids=torch.tensor([[s.length] for s in rows], device=mask.device),
                past_key_values=self._rows.cache,
                use_cache=True,
            )
            self._rows.cache = out.past_key_values
            picks = pick(out.logits[:, -1], rows)
        except Exception as err:
            _report(err)
            for seq in rows:
                seq.fail(f"generation failed: {type(err).__name__}: {err}")
            self._active, self._rows = [], Rows()
            return
        keep = []
        for i, (seq, (token, logprob)) in enumerate(zip(rows, picks)):
            if seq.cancelled:
                self._dropped += 1
                continue
            if seq.add(token, logprob, self.context - seq.length - 2):
                continue
            keep.append(i)
        if len(keep) < len(rows):
            self._active = [rows[i] for i in keep]
            self._rows.keep(keep)


def _report(err: Exception) -> None:
    say("lmforge serve: a request failed inside generation:\n" + "".join(traceback.format_exception(err)).rstrip())
