"""The exceptions users see: a message that says what is wrong, where, and what to do; and the exit status."""

import os
import sys

EXIT_USER_ERROR = 2
EXIT_STOPPED = 143  # 128 + SIGTERM, as a shell reports a process ended by it
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)


class LmforgeError(Exception):
    """An error caused by the user's input (recipe, data, paths), printed without a traceback."""

    exit_code = EXIT_USER_ERROR


class RunStopped(LmforgeError):
    """A run stopped before its end because it was asked to (SIGTERM, SIGINT): its checkpoint is saved, nothing in
    the output claims a finished run, and the command exits with 128 + the signal's number (EXIT_STOPPED for
    SIGTERM, EXIT_INTERRUPTED for SIGINT), as a shell reports a process ended by that signal."""

    exit_code = EXIT_STOPPED

    def __init__(self, message: str, exit_code: int = EXIT_STOPPED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def report(err: LmforgeError) -> int:
    """Print the error as every lmforge command does (its message, no traceback); the exit status to return."""
    print(f"{_speaker()}: {err}", file=sys.stderr)
    return err.exit_code


def _speaker() -> str:
    """`lmforge`, or `lmforge [rank R]` in a job of several processes (torchrun sets RANK and WORLD_SIZE)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"lmforge [rank {os.environ.get('RANK', '0')}]"
    return "lmforge"
