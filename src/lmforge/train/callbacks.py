"""Callbacks lmforge adds to the Trainer: readable progress and the first step. (The NaN guard is in the trainers
themselves, nan_guard.py: a callback sees only the logs, where a NaN loss is filtered out; the save on SIGTERM and
SIGINT is in preempt.py, the resume ledger in ledger.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable

from transformers import TrainerCallback

from lmforge.console import say


class ProgressPrinter(TrainerCallback):
    """One line per log event, for people: step, loss, learning rate, grad norm, tokens/s and time left."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        step, total = state.global_step, state.max_steps
        if "loss" in logs:
            done = max(step - self.first_step, 1)
            left = (time.perf_counter() - self.started) / done * (total - step)
            parts = [
                f"step {step}/{total}",
                f"loss {logs['loss']:.4f}",
                f"lr {logs.get('learning_rate', 0):.2e}",
                f"grad {logs.get('grad_norm', float('nan')):.3f}",
                f"{logs.get('trained_tokens_per_second', 0):,.0f} trained tok/s",
                f"eta {_clock(left)}",
            ]
        elif "eval_loss" in logs:
            parts = [f"step {step}/{total}", f"eval loss {logs['eval_loss']:.4f}"]
        else:
            return
        say("  " + " | ".join(parts))


class OnFirstStep(TrainerCallback):
    """Calls `action` once, when the first optimizer step of this process has finished."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def on_step_end(self, args, state, control, **kwargs):
        if self.action is not None:
            action, self.action = self.action, None
            action()
        return control


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
