"""The one truncation policy (`data.truncation`) for every sample that has a history: SFT conversations, and the
prompt of preference pairs and KTO examples.

A sample longer than `max_length` (one of its sides, for a pair) is
- `drop`: dropped, and counted by the caller;
- `cut`: shortened so its trained tokens survive: first the history is shortened by dropping its oldest turns
  (a turn = a user message and everything up to the next user message; leading system messages stay),
  re-rendered and re-encoded, taking the fewest dropped turns that fit (a binary search: more dropped turns
  never make a sample longer); when even the last turn alone is too long, that is kept and its end is cut at
  max_length. A history that does not open with a user message after its system messages has no turns to
  drop: its end is cut.
Whether what is left still trains anything is the caller's call (SFT drops such a sample, a pair is a bad record).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lmforge.data.chat.masks import Encoded
from lmforge.data.records import Message

Reencode = Callable[[list[Message]], "list[Encoded] | None"]  # shortened history -> its sides (None: refused)


@dataclass
class Fitted:
    """The sides of one sample within max_length, and how they got there."""

    sides: list[Encoded]
    cut: str | None = None  # "history" (older turns dropped), "end" (end cut), or None
    dropped: str | None = None  # why the policy drops it (truncation: drop)
    uncut: list[Encoded] = field(default_factory=list)  # cut "end": the sides before their end was cut


def fit(
    sides: list[Encoded], history: list[Message] | None, reencode: Reencode, max_length: int, truncation: str
) -> Fitted:
    """The sample's sides within max_length under the policy (module docstring). `history` holds the messages
    whose oldest turns may go (None: none may), `reencode` encodes the sample again with a shortened history."""
    if max(len(s.input_ids) for s in sides) <= max_length:
        return Fitted(sides)
    if truncation == "drop":
        return Fitted(sides, dropped=f"longer than max_length {max_length} (truncation: drop)")
    turns = history_turns(history) if history is not None else None
    if turns is not None and len(turns[1]) > 1:
        head, groups = turns
        fitting = _fewest_dropped(head, groups, reencode, max_length)
        if fitting is not None:
            return Fitted(fitting, cut="history")
        sides = reencode([*head, *groups[-1]]) or sides  # even the last turn alone is too long: keep it alone
    cut = [Encoded(s.input_ids[:max_length], s.labels[:max_length], s.text, s.split) for s in sides]
    return Fitted(cut, cut="end", uncut=sides)


def history_turns(messages: list[Message]) -> tuple[list[Message], list[list[Message]]] | None:
    """(leading system messages, turns each opening with a user message); None when something other than a
    system message comes before the first user message."""
    k = 0
    while k < len(messages) and messages[k].role == "system":
        k += 1
    if k == len(messages) or messages[k].role != "user":
        return None
    groups: list[list[Message]] = []
    for m in messages[k:]:
        if m.role == "user":
            groups.append([])
        groups[-1].append(m)
    return messages[:k], groups


def _fewest_dropped(
    head: list[Message], groups: list[list[Message]], reencode: Reencode, max_length: int
) -> list[Encoded] | None:
    """Binary search for the fewest dropped oldest turns whose re-encoding fits max_length."""
    low, high, found = 1, len(groups) - 1, None  # dropping `high` turns keeps only the last one
    while low <= high:
        mid = (low + high) // 2
        sides = reencode([*head, *(m for g in groups[mid:] for m in g)])
        if sides is not None and max(len(s.input_ids) for s in sides) <= max_length:
            found, high = sides, mid - 1
        else:
            low = mid + 1
    return found
