"""Packing: samples into bins of max_length tokens, best-fit decreasing, each with its own position ids.

The one packer of pretraining (whole documents, cut into max_length pieces by `text.py`) and SFT (encoded
conversations), applied at the same point of the pipeline: to the flat arrays, after the data cache.

A packed row holds several samples back to back. Each sample's position ids restart at 0: that is
how the collator finds the sample boundaries, and it keeps attention from crossing them on every
backend (a block-diagonal mask for SDPA/eager, varlen/padding-free for flash and flex attention,
see `train/collate.py`). Each sample's first label is IGNORE_INDEX: the token before it in the row
belongs to another sample, so it has nothing to be predicted from. Unpacked, the causal shift drops
that label anyway, so packing changes which tokens share a row, never what is trained.

Best-fit decreasing: the samples, longest first (equal lengths keep their order), each go into the
fullest bin that still has room for them (the earliest of equally full ones), or a new bin.
Deterministic; at most 11/9 of the fewest possible bins (plus one), and close to optimal when most
samples are short next to max_length, as in chat data.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from itertools import chain

import numpy as np

from lmforge.data.examples import IGNORE_INDEX, Examples
from lmforge.errors import LmforgeError


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins whose lengths add up to at most `capacity`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: equal lengths keep their order
    bins: list[list[int]] = []
    by_space: dict[int, list[int]] = {}  # free space -> heap of the bins with exactly that much room
    spaces: list[int] = []  # the free-space values that have bins, sorted (at most `capacity` of them)
    for i in order:
        size = lengths[i]
        if size > capacity or size < 1:
            raise LmforgeError(
                f"packing: sample {i} has {size} tokens; only samples of 1 to {capacity} tokens "
                "(data.max_length) fit in a bin"
            )
        at = bisect.bisect_left(spaces, size)  # the least room that still fits the sample: the best fit
        if at == len(spaces):
            space, b = capacity, len(bins)
            bins.append([])
        else:
            space = spaces[at]
            b = heapq.heappop(by_space[space])  # the earliest of equally good bins
            if not by_space[space]:
                del by_space[space], spaces[at]
        bins[b].append(i)
        left = space - size
        if left:
            if left not in by_space:
                by_space[left] = []
                bisect.insort(spaces, left)
            heapq.heappush(by_space[left], b)
    return bins


def packing_efficiency(lengths: Sequence[int], n_bins: int, capacity: int) -> float:
    """Real tokens / bin capacity: the share of each packed row that is not padding."""
    return sum(lengths) / (n_bins * capacity) if n_bins else 0.0


def pack(examples: Examples, max_length: int) -> tuple[Examples, float]:
    """(packed rows, efficiency): the examples packed into rows of at most max_length tokens, without Python loops
    over tokens. Each row has input_ids, labels (each sample's first label IGNORE_INDEX) and position_ids
    (restarting at 0 for each sample). An example longer than max_length is an error: cut or drop it first."""
    input_ids, labels = examples.input_ids, examples.labels
    lengths = np.asarray(examples.lengths, dtype=np.int64)
    bins = best_fit_decreasing(lengths.tolist(), max_length)
    order = np.fromiter(chain.from_iterable(bins), dtype=np.int64, count=len(lengths))
    starts = np.cumsum(lengths) - lengths
    sizes = lengths[order]
    new_starts = np.cumsum(sizes) - sizes
    positions = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(new_starts, sizes)
    take = np.repeat(starts[order], sizes) + positions
    packed_labels = labels[take]
    packed_labels[new_starts] = IGNORE_INDEX
    row_lengths = np.array([int(lengths[members].sum()) for members in bins], dtype=np.int64)
    packed = Examples(
        input_ids=input_ids[take],
        labels=packed_labels,
        lengths=row_lengths,
        position_ids=positions.astype(input_ids.dtype),
    )
    return packed, packing_efficiency(lengths.tolist(), len(bins), max_length)
