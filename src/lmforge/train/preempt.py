"""Stopping a run when asked: SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C).

The first signal asks the run to stop: the step in progress finishes, a checkpoint is saved, training stops and
the command exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT) after saying how to resume;
nothing that claims a finished run is written. A second signal stops the process at once, with the same status
and without saving anything more: the last complete checkpoint stays what `--resume` continues from.

A second signal counts only from `REPEAT_AFTER_S` after the first: torchrun forwards the signals it gets to its
ranks, which also get a terminal's Ctrl-C or a scheduler's SIGTERM themselves, so one request can reach a rank
twice within milliseconds.

Several processes must stop at the same step, or the checkpoint's collectives hang: at every step's end the
ranks agree on whether any of them was asked (ranks.max_across, one small all-reduce per step, only when there
are several).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from transformers import TrainerCallback

from lmforge.console import say
from lmforge.train import ranks

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_AFTER_S = 1.0


def exit_status(signum: int) -> int:
    """The status a shell reports for a process ended by `signum`: what a stopped run exits with."""
    return 128 + signum


class StopOnSignal(TrainerCallback):
    """SIGTERM or SIGINT: finish the step, save a checkpoint and stop (`stopped_by` then names the signal);
    a second one: exit at once (see the module docstring)."""

    def __init__(self) -> None:
        self.received = 0  # the first signal this process got (0: none)
        self.stopped_by = 0  # the signal the job stopped for, agreed by every rank (0: not stopped)
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._request)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}

    def _request(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if not self.received:
            self.received, self._first_at = signum, time.monotonic()
            say(f"lmforge: {name} received; saving a checkpoint after this step (send it again to stop at once)")
        elif time.monotonic() - self._first_at >= REPEAT_AFTER_S:
            say(f"lmforge: {name} again; stopping now without saving more (the last complete checkpoint stays)")
            sys.stderr.flush()
            os._exit(exit_status(signum))

    def on_step_end(self, args, state, control, **kwargs):
        self.stopped_by = ranks.max_across(self.received)  # every rank stops at this step if any was asked
        if self.stopped_by:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
