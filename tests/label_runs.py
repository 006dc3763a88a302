"""Runs of labelled tokens in a sample, for the mask tests."""

from __future__ import annotations

from lmforge.data.examples import IGNORE_INDEX


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    """The [start, stop) token ranges whose labels are not IGNORE_INDEX, in order."""
    runs, start = [], None
    for k, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = k
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, k))
            start = None
    return runs
