"""What is wrong with one row or record: the readers add where it is (file:line or file: row N)."""

from __future__ import annotations

from typing import Any

# Categories a reject is counted under (`on_error: skip` prints how many of each).
MALFORMED = "malformed line"
NOT_UTF8 = "non-UTF-8 byte"
MISSING = "missing field"
ORDER = "wrong role order"
EMPTY = "empty assistant content"
BAD_VALUE = "bad value"
UNKNOWN_FORMAT = "unknown format"


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
