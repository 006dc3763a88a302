"""The NaN/inf guard's decisions on real losses and gradients (whole runs: tests/e2e/test_checkpoints_cli.py)."""

import math

import torch

from lmforge.train.nan_guard import NanWatch, drop_gradients


def test_a_nan_loss_in_any_micro_batch_poisons_the_step_and_only_that_step():
    watch = NanWatch("stop")
    watch.see_loss(torch.tensor(2.0))
    watch.see_loss(torch.tensor(math.nan))
    watch.see_loss(torch.tensor(1.0))  # a later micro-batch of the same step does not clear it
    assert watch.poisoned(torch.tensor(0.5), watch_grad=True)
    watch.see_loss(torch.tensor(1.0))
    assert not watch.poisoned(torch.tensor(0.5), watch_grad=True)


def test_an_inf_gradient_norm_poisons_the_step_unless_a_loss_scaler_owns_it():
    watch = NanWatch("stop")
    watch.see_loss(torch.tensor(1.0))
    assert watch.poisoned(math.inf, watch_grad=True)
    watch.see_loss(torch.tensor(1.0))
    assert not watch.poisoned(math.inf, watch_grad=False)  # fp16: the scaler skips the step and lowers its scale


def test_stop_keeps_the_first_step_and_skip_counts_each():
    stop, skip = NanWatch("stop"), NanWatch("skip")
    for step in (3, 5):
        stop.record(step)
        skip.record(step)
    assert stop.tripped_at == 3 and stop.skipped == []
    assert skip.tripped_at is None and skip.skipped == [3, 5]


def test_dropped_gradients_leave_the_weights_unchanged_by_the_optimizer_step():
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    layer(torch.full((1, 4), math.nan)).sum().backward()
    drop_gradients(layer)
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
