"""What lmforge tells the person running it while it works: one line at a time on stderr, flushed (stdout is
left to what a command prints as its result, e.g. `lmforge data inspect --json`).

In a job of several processes (torchrun sets RANK) only rank 0 speaks, so each line is printed once; errors are
printed by the rank it happened on (errors.report names it).

Other libraries' notices that tell the user nothing they can act on are kept out of the way unless `lmforge -v`
asks for them (`quiet_third_party`): deprecation and future warnings raised outside lmforge, a few known log lines
(NOISE) and transformers' own progress bars (loading and writing weights). Their errors, other warnings and log
records, and everything lmforge says, are shown as before.
"""

import logging
import os
import sys
import warnings

VERBOSE_ENV = "LMFORGE_VERBOSE"  # set by `lmforge -v`; processes started by lmforge (torchrun ranks) inherit it
# (logger, start of the message): log lines that say nothing to a user of lmforge
NOISE = (
    ("DeepSpeed", "Setting accelerator to CPU"),  # on every import of deepspeed on a machine without GPUs
    ("transformers.trainer_utils", "mtime may not be reliable"),  # how transformers sorts checkpoint folders
)


def say(message: str) -> None:
    if os.environ.get("RANK", "0") != "0":
        return
    print(message, file=sys.stderr, flush=True)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_third_party(asked_verbose: bool = False) -> None:
    """Filter the notices described in the module docstring, unless verbose (`-v` or LMFORGE_VERBOSE=1)."""
    if asked_verbose:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        return
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!lmforge(\.|$))")
    for name, start in NOISE:
        logging.getLogger(name).addFilter(_Drop(start))


def quiet_progress_bars() -> None:
    """transformers' own bars ("Loading weights", "Writing model shards"), unless verbose; the hub's download
    bars, which are worth watching on a large model, stay."""
    if verbose():
        return
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is not None:
        set_hook(lambda factory, args, kwargs: hf_logging.EmptyTqdm(*args, **kwargs))


class _Drop(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)
