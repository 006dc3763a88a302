"""The one exception type users see: a message that says what is wrong, where, and what to do."""

import sys


class LmforgeError(Exception):
    """An error caused by the user's input (recipe, data, paths), printed without a traceback."""


def report(err: LmforgeError) -> int:
    """Print the error as every lmforge command does (its message, no traceback); the exit status to return."""
    print(f"lmforge: {err}", file=sys.stderr)
    return 2
