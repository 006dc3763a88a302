"""The stop on SIGTERM and SIGINT driven as the Trainer drives it, without a model (the CLI's behaviour, exit
statuses and the second signal are tested in tests/e2e/test_resume_cli.py)."""

import os
import signal
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from lmforge.train.preempt import StopOnSignal, exit_status


def state(step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_then_saves_and_stops(signum):
    guard, args, control = StopOnSignal(), SimpleNamespace(), TrainerControl()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    guard.on_train_begin(args, state(), control)
    try:
        guard.on_step_end(args, state(1), control)
        assert not (control.should_save or control.should_training_stop)  # no signal yet: nothing changes
        os.kill(os.getpid(), signum)  # the handler runs here, in the main thread (SIGINT raises nothing)
        assert guard.received == signum and not control.should_training_stop  # the step in flight is not cut short
        os.kill(os.getpid(), signum)  # a repeat within REPEAT_AFTER_S is the same request (torchrun forwards)
        guard.on_step_end(args, state(2), control)
        assert control.should_save and control.should_training_stop and guard.stopped_by == signum
    finally:
        guard.on_train_end(args, state(2), control)
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back


def test_exit_statuses_are_the_shells():
    assert exit_status(signal.SIGTERM) == 143 and exit_status(signal.SIGINT) == 130
