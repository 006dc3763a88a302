"""What lmforge tells the person running it while it works: one line at a time on stderr, flushed (stdout is
left to what a command prints as its result, e.g. `lmforge data inspect --json`)."""

import sys


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
