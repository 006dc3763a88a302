"""The running batch's key/value cache: rows of different lengths, left-padded to one length.

Each row is a sequence being generated. A sequence joins with the cache of its own prompt (prefilled alone);
the batch and the newcomer are padded on the left to the longer of the two and stacked, their attention masks
padded with zeros. A finished row is dropped, and the columns every remaining row has as padding are cut, so
the cache is never longer than its longest row. Positions are counted per row (its real tokens only), so a
row's keys and queries are those of the same sequence run alone; the padding is masked out.

Only caches of full-attention layers (transformers' DynamicLayer) can be padded so; `batchable` says whether a
model's cache is one (a sliding-window or recurrent layer is not: the server then runs one request at a time).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def batchable(cache: DynamicCache) -> bool:
    return all(type(layer) is DynamicLayer for layer in cache.layers)


class Rows:
    """The batch's cache, its attention mask (1: a real token) and the row count."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def add(self, cache: DynamicCache) -> None:
        """Stack one prefilled sequence's cache (batch of one, no padding) under the rows."""
        length = cache.get_seq_length()
        ones = torch.ones(1, length, dtype=torch.long, device=cache.layers[0].keys.device)
        if self.cache is None:
            self.cache, self.mask = cache, ones
            return
        width = max(self.mask.shape[1], length)
        layers = [
            (
                torch.cat([_pad(a.keys, width), _pad(b.keys, width)]),
                torch.cat([_pad(a.values, width), _pad(b.values, width)]),
            )
            for a, b in zip(self.cache.layers, cache.layers)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.mask = torch.cat([_pad(self.mask, width), _pad(ones, width)])

    def grow(self) -> torch.Tensor:
        """The mask for a decode step: every row gets one more real token."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        return self.mask

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, and cut the padding columns no remaining row needs."""
        if not rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask[index]
        unused = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
        self.mask = mask[:, unused:]
        self.cache = DynamicCache(
            ddp_cache_data=[(a.keys[index, :, unused:], a.values[index, :, unused:]) for a in self.cache.layers]
        )


def _pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros on the left of the sequence axis (-2 for keys/values, -1 for a mask) up to `width`."""
    axis = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
