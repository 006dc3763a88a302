"""What the trainers log beside the loss: trained tokens and their rate, per-batch metrics averaged per log."""

import time

import pytest
import torch

from lmforge.data.examples import IGNORE_INDEX
from lmforge.train.metrics import MetricLog, TokenCounter, split_of

X = IGNORE_INDEX


def test_split_of_a_log_event():
    assert split_of({"loss": 1.0, "learning_rate": 1e-3}) == "train"
    assert split_of({"eval_loss": 1.0}) == "eval"
    assert split_of({"train_runtime": 3.0}) is None


def test_token_counter_logs_the_total_and_the_rate_since_the_last_training_log():
    counter = TokenCounter()
    counter.add(torch.tensor([[X, X, 5, 6, 7], [X, 8, 9, X, X]]))  # trained after the shift: 3 + 2
    counter.add(torch.tensor([[X, 1, 2]]))
    time.sleep(0.05)
    first = {"loss": 1.0}
    counter.log_into(first)
    assert first["trained_tokens"] == 7 == counter.trained
    assert 0 < first["trained_tokens_per_second"] <= 7 / 0.05
    evaluation = {"eval_loss": 1.0}
    counter.log_into(evaluation)
    assert evaluation == {"eval_loss": 1.0}  # eval logs carry no token figures
    second = {"loss": 0.5}
    counter.log_into(second)
    assert second["trained_tokens"] == 7 and second["trained_tokens_per_second"] == 0.0  # none since the first


def test_metric_log_averages_each_split_over_its_interval_then_starts_again():
    metrics = MetricLog()
    metrics.add("train", {"rewards/margins": 1.0, "accuracy": 0.5})
    metrics.add("train", {"rewards/margins": 3.0, "accuracy": 1.0})
    metrics.add("eval", {"rewards/margins": -2.0})
    logs = {"loss": 0.7}
    metrics.mean_into(logs, "train")
    assert logs == {"loss": 0.7, "rewards/margins": 2.0, "accuracy": 0.75}
    evaluation = {"eval_loss": 0.9}
    metrics.mean_into(evaluation, "eval")
    assert evaluation == {"eval_loss": 0.9, "eval_rewards/margins": -2.0}
    metrics.add("train", {"accuracy": 0.0})
    again = {"loss": 0.6}
    metrics.mean_into(again, "train")
    assert again == {"loss": 0.6, "accuracy": pytest.approx(0.0)}  # the earlier batches are not counted again
