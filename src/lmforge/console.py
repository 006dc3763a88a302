"""What lmforge tells the person running it while it works: one line at a time on stderr, flushed (stdout is
left to what a command prints as its result, e.g. `lmforge data inspect --json`).

In a job of several processes (torchrun sets RANK) only rank 0 speaks, so each line is printed once; errors are
printed by the rank they happened on (errors.report names it)."""

import os
import sys


def say(message: str) -> None:
    if os.environ.get("RANK", "0") != "0":
        return
    print(message, file=sys.stderr, flush=True)
