"""The one training engine: a `transformers.Trainer` that knows packed masks and counts trained tokens."""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer

from lmforge.train.collate import additive_mask, count_trained_tokens


class LmforgeTrainer(Trainer):
    """Adds to Trainer what lmforge owns: packed-batch masks and trained-tokens-per-second logging."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained_tokens = 0
        self._tokens_at_last_log = 0
        self._time_at_last_log = time.perf_counter()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 4 and mask.dtype == torch.bool:
            inputs = {**inputs, "attention_mask": additive_mask(mask, _compute_dtype(model))}
        if model.training and "labels" in inputs:
            self.trained_tokens += count_trained_tokens(inputs["labels"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log, not an eval one
            now = time.perf_counter()
            elapsed = max(now - self._time_at_last_log, 1e-9)
            logs["trained_tokens"] = self.trained_tokens
            logs["trained_tokens_per_second"] = round((self.trained_tokens - self._tokens_at_last_log) / elapsed, 1)
            self._tokens_at_last_log, self._time_at_last_log = self.trained_tokens, now
        super().log(logs, start_time)


def _compute_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32
