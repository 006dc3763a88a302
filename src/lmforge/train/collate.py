"""Batch assembly: dynamic padding, and block-diagonal masks for packed rows."""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100


class Collator:
    """Pads each batch to its longest row; rows with `position_ids` are packed and get a block mask.

    Packed rows hold several documents, each with position ids restarting at 0. Position ids alone
    do not stop attention from crossing documents on SDPA or eager, so packed batches carry a 4D
    boolean mask (True = may attend) that the trainer turns into an additive mask in the model's dtype.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": _pad([r["input_ids"] for r in rows], length, self.pad_token_id),
            "labels": _pad([r["labels"] for r in rows], length, IGNORE_INDEX),
        }
        real = _pad([[1] * len(r["input_ids"]) for r in rows], length, 0)
        if "position_ids" in rows[0]:
            positions = _pad([r["position_ids"] for r in rows], length, 0)
            batch["position_ids"] = positions
            batch["attention_mask"] = block_causal_mask(positions, real.bool())
        else:
            batch["attention_mask"] = real
        return batch


def _pad(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def block_causal_mask(position_ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) boolean: token q may attend to token k when both are in the same document and k <= q.

    A document starts wherever the position id restarts at 0. Padding attends only to itself so no
    row of the mask is empty (an empty row gives NaN in softmax).
    """
    starts = (position_ids == 0).long()
    doc = torch.cumsum(starts, dim=1) * real.long()  # padding gets document 0
    same_doc = doc.unsqueeze(2) == doc.unsqueeze(1)
    length = position_ids.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=position_ids.device))
    mask = same_doc & causal & real.unsqueeze(1)
    eye = torch.eye(length, dtype=torch.bool, device=position_ids.device)
    mask = mask | (eye & ~real.unsqueeze(2))
    return mask.unsqueeze(1)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean (True = attend) to additive float: eager attention leaks through boolean 4D masks."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)


def count_trained_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry loss: labels after the causal shift that are not ignored."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
