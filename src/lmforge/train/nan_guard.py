"""The NaN/inf guard: each micro-batch's loss and each optimizer step's gradient norm, as the Trainer computes
them (not as its logs show them: `logging_nan_inf_filter` replaces a NaN loss in the logs by an average).

A step is poisoned when a loss of one of its micro-batches (on any rank) or its gradient norm before clipping is
NaN or inf. Its gradients are dropped before the optimizer step (set to None, which torch's optimizers skip: no
update, no change to the moments), so the weights stay those of the last good step. Then, by `train.on_nan`:
stop ends the run there (no checkpoint is saved after it, and run.py writes no final model), skip goes on with the
next batch and counts the step. With fp16's loss scaling an inf/NaN gradient norm is the scaler's business (it
skips that step and lowers the scale), so only the loss is watched there.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from lmforge.train import ranks

OnNan = Literal["stop", "skip"]


class NanWatch:
    """What the guard has seen: the losses of the step in progress, the step it stopped at, the steps skipped."""

    def __init__(self, mode: OnNan = "stop") -> None:
        self.mode = mode
        self.tripped_at: int | None = None  # the optimizer step (1-based) whose loss or gradient was not finite
        self.skipped: list[int] = []
        self._bad_loss: torch.Tensor | None = None

    def see_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss; kept on its device, read once per optimizer step."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad

    def poisoned(self, grad_norm: torch.Tensor | float | None, *, watch_grad: bool) -> bool:
        """Whether the optimizer step about to be taken saw a NaN/inf, on any rank (every rank calls this)."""
        bad = bool(self._bad_loss) if self._bad_loss is not None else False
        self._bad_loss = None
        if watch_grad and grad_norm is not None:
            bad = bad or not math.isfinite(float(grad_norm))
        return ranks.any_across(bad)

    def record(self, step: int) -> None:
        if self.mode == "skip":
            self.skipped.append(step)
        elif self.tripped_at is None:
            self.tripped_at = step


def drop_gradients(model: torch.nn.Module) -> None:
    """Forget this step's gradients so the optimizer step changes nothing."""
    for param in model.parameters():
        param.grad = None
