"""One sequence being generated: its prompt, its own sampling settings, and what it has produced so far.

The engine hands it one token at a time (`add`); the sequence decodes its text, ends itself at a stop token,
a stop string (cut from the text), its token budget or the model's context, and tells its listener what is
new: text that can no longer turn into a stop string, with those tokens' log-probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer


@dataclass(frozen=True)
class Settings:
    """How one sequence is generated (checked at the API edge, serve/protocol.py)."""

    max_new_tokens: int
    stop_ids: frozenset[int]
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no log-probabilities; 0: the chosen token's only


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the likeliest tokens of the step, (id, log-probability)


@dataclass
class Event:
    """What a listener is told: new text (and its tokens' log-probabilities); at the end, why it ended, and on
    a failure inside generation the message."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None


class Sequence:
    def __init__(self, prompt: list[int], settings: Settings, tokenizer: Tokenizer, listener: Callable[[Event], Any]):
        self.prompt, self.settings, self.tokenizer, self.listener = prompt, settings, tokenizer, listener
        self.generator = torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
        self.ids: list[int] = []  # the reply's tokens, the stop token left out
        self.generated = 0  # tokens generated, a stop token included (usage counts it)
        self.text = ""
        self.finish_reason: str | None = None
        self._sent = 0
        self._pending: list[TokenLogprob] = []
        self._cancelled = threading.Event()

    @property
    def last(self) -> int:
        return self.ids[-1]

    @property
    def length(self) -> int:
        """Real tokens in its cache rows once the last token is fed: the prompt and the reply."""
        return len(self.prompt) + len(self.ids) - 1

    def cancel(self) -> None:
        """The client went away: the engine drops the sequence at its next step (any thread may call this)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def add(self, token: int, logprob: TokenLogprob | None, context_left: int) -> bool:
        """Take the next token; True when the sequence has ended (its listener is then told why)."""
        self.generated += 1
        if token in self.settings.stop_ids:
            return self._finish("stop")
        self.ids.append(token)
        if logprob is not None:
            self._pending.append(logprob)
        before = len(self.text)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = self._stop_string(before)
        if cut is not None:
            self.text = self.text[:cut]
            return self._finish("stop")
        if self.generated >= self.settings.max_new_tokens or context_left <= 0:
            return self._finish("length")
        self._send(self._held_back())
        return False

    def fail(self, message: str) -> None:
        self.finish_reason = "error"
        self.listener(Event(error=message, finish_reason="error"))

    def _finish(self, reason: str) -> bool:
        self.finish_reason = reason
        self._send(0, reason)
        return True

    def _stop_string(self, before: int) -> int | None:
        """Where the first stop string starts, looking only where new text could have completed one."""
        hits = []
        for stop in self.settings.stop:
            at = self.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                hits.append(at)
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Characters at the end not sent yet: a partial character, or the start of a stop string."""
        if self.text.endswith("\ufffd"):
            return len(self.text) - self._sent
        held = 0
        for stop in self.settings.stop:
            for size in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:size]):
                    held = size
                    break
        return held

    def _send(self, held: int, finish_reason: str | None = None) -> None:
        end = max(self._sent, len(self.text) - held)
        if end == self._sent and not self._pending and finish_reason is None:
            return
        event = Event(self.text[self._sent : end], self._pending, finish_reason)
        self._sent, self._pending = end, []
        self.listener(event)
