"""lmforge's Trainer callbacks driven as the Trainer drives them, without a model."""

import os
import signal
from types import SimpleNamespace

from transformers import TrainerControl

from lmforge.train.callbacks import OnFirstStep, SaveOnSigterm


def state(step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=10)


def test_sigterm_finishes_the_step_then_saves_and_stops():
    guard, args, control = SaveOnSigterm(), SimpleNamespace(), TrainerControl()
    before = signal.getsignal(signal.SIGTERM)
    guard.on_train_begin(args, state(), control)
    try:
        guard.on_step_end(args, state(1), control)
        assert not (control.should_save or control.should_training_stop)  # no signal yet: nothing changes
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the main thread
        assert guard.requested and not control.should_training_stop  # the step in flight is not cut short
        guard.on_step_end(args, state(2), control)
        assert control.should_save and control.should_training_stop
    finally:
        guard.on_train_end(args, state(2), control)
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


def test_on_first_step_acts_once():
    calls = []
    callback, control = OnFirstStep(lambda: calls.append(1)), TrainerControl()
    for step in range(1, 4):
        callback.on_step_end(SimpleNamespace(), state(step), control)
    assert calls == [1]
