"""lmforge's Trainer callbacks driven as the Trainer drives them, without a model."""

from types import SimpleNamespace

from transformers import TrainerControl

from lmforge.train.callbacks import OnFirstStep


def state(step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=10)


def test_on_first_step_acts_once():
    calls = []
    callback, control = OnFirstStep(lambda: calls.append(1)), TrainerControl()
    for step in range(1, 4):
        callback.on_step_end(SimpleNamespace(), state(step), control)
    assert calls == [1]
