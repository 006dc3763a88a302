"""lmforge's Trainer callbacks driven as the Trainer drives them, without a model."""

import math
from types import SimpleNamespace

from transformers import TrainerControl

from lmforge.train.callbacks import NanGuard, OnFirstStep


def state(step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=10)


def test_nan_guard_stops_at_the_first_non_finite_loss():
    guard, control = NanGuard(), TrainerControl()
    guard.on_log(SimpleNamespace(), state(1), control, logs={"loss": 2.5})
    guard.on_log(SimpleNamespace(), state(2), control, logs={"eval_loss": math.nan})  # only the training loss counts
    assert guard.tripped_at is None and not control.should_training_stop
    guard.on_log(SimpleNamespace(), state(3), control, logs={"loss": math.inf})
    assert guard.tripped_at == 3 and control.should_training_stop
    guard.on_log(SimpleNamespace(), state(4), control, logs={"loss": math.nan})
    assert guard.tripped_at == 3  # where it went wrong first


def test_on_first_step_acts_once():
    calls = []
    callback, control = OnFirstStep(lambda: calls.append(1)), TrainerControl()
    for step in range(1, 4):
        callback.on_step_end(SimpleNamespace(), state(step), control)
    assert calls == [1]
