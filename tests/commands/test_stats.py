"""`lmforge data stats` figures on known examples (the preference stages' figures: test_inspect_pairs.py)."""

from __future__ import annotations

import pytest

from lmforge.commands.stats import dataset_stats, packed_bins, percentile
from lmforge.data.examples import IGNORE_INDEX


def example(length: int, trained: int) -> dict:
    """A sample of `length` tokens whose last `trained` tokens carry loss."""
    ids = list(range(1, length + 1))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (length - trained) + ids[length - trained :]}


def test_stats_figures_on_a_known_dataset():
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    stats = dataset_stats([example(n, n // 10) for n in lengths], max_length=100)
    assert stats["samples"] == 10 and stats["tokens"] == 550
    assert stats["trained_tokens"] == 55 and stats["trained_fraction"] == pytest.approx(0.1)
    assert stats["length"] == {"p50": 50, "p90": 90, "p99": 100, "max": 100, "min": 10}
    # best-fit decreasing: 100 | 90+10 | 80+20 | 70+30 | 60+40 | 50 -> 6 rows of 100
    assert stats["packed_rows"] == 6 and stats["packing_efficiency"] == pytest.approx(550 / 600)


def test_the_first_token_is_never_trained():
    stats = dataset_stats([example(4, 4)], max_length=8)
    assert stats["trained_tokens"] == 3  # labels after the causal shift, as the loss counts them


def test_percentile_is_nearest_rank():
    values = list(range(1, 201))
    assert [percentile(values, p) for p in (50, 90, 99)] == [100, 180, 198]
    assert percentile([7], 99) == 7 and percentile([], 50) == 0


def test_packed_bins_best_fit_decreasing():
    assert packed_bins([60, 50, 40, 30, 20], 100) == 2  # 60+40, 50+30+20
    assert packed_bins([51, 51, 51], 100) == 3
    assert packed_bins([], 100) == 0
    assert packed_bins([25] * 8, 100) == 2
