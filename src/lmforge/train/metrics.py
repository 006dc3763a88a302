"""What lmforge's trainers log beside the loss, as small parts both trainers hold (not a base class):

- `TokenCounter`: the trained (loss-bearing) tokens so far, logged with every training log as
  `trained_tokens` and `trained_tokens_per_second` (since the previous training log);
- `MetricLog`: metrics kept for every batch and logged as their mean over the batches since the
  previous log of their split (`train`, or `eval` with the `eval_` prefix).

A log event is a training one when it has `loss`, an evaluation one when it has `eval_loss`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import torch

from lmforge.data.examples import trained_tokens

SPLITS = ("train", "eval")
PREFIX = {"train": "", "eval": "eval_"}


def split_of(logs: dict[str, float]) -> str | None:
    """ "train" for a training log, "eval" for an evaluation log, None for any other (e.g. the run's end)."""
    return "train" if "loss" in logs else "eval" if "eval_loss" in logs else None


class TokenCounter:
    """Trained tokens since the start, and their rate between two training logs. `total` turns this process's
    count into the job's (ranks.sum_across in a job of several processes; every rank logs at the same step)."""

    def __init__(self, total: Callable[[int], int] = int) -> None:
        self.total = total
        self.trained = 0
        self.earlier = 0  # the job's trained tokens before this process started (a resumed run)
        self._at_last_log = 0
        self._time_at_last_log = time.perf_counter()

    def continue_from(self, earlier: int) -> None:
        """Count on from the job's `earlier` trained tokens (a resumed run's, from its checkpoint)."""
        self.earlier = self._at_last_log = earlier

    def job_total(self) -> int:
        """The job's trained tokens so far; every rank must call it at the same point (see `total`)."""
        return self.earlier + self.total(self.trained)

    def add(self, labels: torch.Tensor) -> None:
        """Count a training batch's trained tokens (labels after the causal shift, as the loss counts them)."""
        self.trained += trained_tokens(labels)

    def log_into(self, logs: dict[str, float]) -> None:
        """Add `trained_tokens` and `trained_tokens_per_second` to a training log; other logs are left alone."""
        if split_of(logs) != "train":
            return
        now = time.perf_counter()
        elapsed = max(now - self._time_at_last_log, 1e-9)
        trained = self.job_total()
        logs["trained_tokens"] = trained
        logs["trained_tokens_per_second"] = round((trained - self._at_last_log) / elapsed, 1)
        self._at_last_log, self._time_at_last_log = trained, now


class MetricLog:
    """Each batch's metrics by split, logged as their mean over the log interval."""

    def __init__(self) -> None:
        self._stored: dict[str, defaultdict[str, list[float]]] = {split: defaultdict(list) for split in SPLITS}

    def add(self, split: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self._stored[split][key].append(value)

    def mean_into(self, logs: dict[str, float], split: str) -> None:
        """Add the mean of each metric kept for `split` to `logs` (eval ones as `eval_<name>`), then forget them."""
        for key, values in self._stored[split].items():
            logs[PREFIX[split] + key] = sum(values) / len(values)
        self._stored[split].clear()
