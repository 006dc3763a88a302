"""What is wrong with one row or record, and the rejects: the bad records a run skips (`data.on_error: skip`),
each with where it is (file:line, file: record N, file: row N), why, and the row as it was read.

Readers raise RecordProblem for a bad row and add where it is; a skipped one becomes a Reject. Nothing is
dropped without a Reject, and every count of them is said by category.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lmforge.errors import LmforgeError

MAX_PROBLEMS = 10  # an error lists this many bad records, then says how many more there are

# Categories a reject is counted under (`on_error: skip` prints how many of each).
MALFORMED = "malformed line"
NOT_UTF8 = "non-UTF-8 byte"
MISSING = "missing field"
ORDER = "wrong role order"
EMPTY = "empty assistant content"
BAD_VALUE = "bad value"
MEDIA = "media (lmforge trains text only)"
NOT_READ = "key that would be lost"
UNKNOWN_FORMAT = "unknown format"
ENCODE_FAILED = "template cannot encode it"


class RecordProblem(Exception):
    """One bad row or record: the message names the field and what was expected.

    `raw` keeps what could be read of a row that is not an object (the line's text), for the rejects file.
    """

    def __init__(self, message: str, category: str = BAD_VALUE, raw: Any = None) -> None:
        super().__init__(message)
        self.category = category
        self.raw = raw


class UnknownFormat(RecordProblem):
    """format: auto found no known key in a record."""

    def __init__(self, message: str) -> None:
        super().__init__(message, UNKNOWN_FORMAT)


def kind_of(value: Any) -> str:
    """A value's JSON kind in words, for messages such as '"messages" is a string; expected a list'."""
    if value is None:
        return "null"
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


@dataclass
class Reject:
    source: str  # where: file:line, file: record N, file: row N
    reason: str  # what is wrong and what was expected
    raw: Any  # the row as read (a line's text when it is not JSON)
    category: str = BAD_VALUE  # one of the categories above, for counts by reason


def problems_error(label: str, rejects: list[Reject], total: int) -> LmforgeError:
    """One problem as it is; several as a count and the first MAX_PROBLEMS, one per line."""
    if len(rejects) == 1:
        return LmforgeError(f"{rejects[0].source}: {rejects[0].reason}")
    more = f" (first {MAX_PROBLEMS} shown)" if len(rejects) > MAX_PROBLEMS else ""
    head = (
        f"{label}: {len(rejects)} bad records of {total}{more}; fix them, or set data.on_error: skip to skip "
        "and count them:"
    )
    return LmforgeError("\n  ".join([head, *(f"{r.source}: {r.reason}" for r in rejects[:MAX_PROBLEMS])]))


def rejects_jsonl(rejects: list[Reject]) -> bytes:
    """The rejects as JSON Lines: source, reason, category and the raw row, one a line."""
    lines = [
        json.dumps(
            {"source": r.source, "reason": r.reason, "category": r.category, "raw": r.raw},
            ensure_ascii=False,
            default=str,
        )
        for r in rejects
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def by_category(rejects: list[Reject]) -> dict[str, int]:
    return dict(Counter(r.category for r in rejects))


def counts_text(counts: dict[str, int]) -> str:
    """'3 malformed line, 1 empty reply': counts by reason, as messages give them."""
    return ", ".join(f"{n:,} {why}" for why, n in counts.items())
