"""Batch assembly: dynamic padding and block-diagonal masks (SDPA/eager), or padding-free rows (flash/flex)."""

from __future__ import annotations

from typing import Any

import torch

from lmforge.data.examples import IGNORE_INDEX
from lmforge.model.varlen import cu_seqlens_from_positions

VARLEN_FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4", "lmforge_varlen")
VARLEN_FLEX = "flex_attention"


class Collator:
    """Batches for the model's attention implementation; rows with `position_ids` are packed samples.

    SDPA and eager (and any other): each batch is padded to its longest row. Packed rows hold several
    samples, each with position ids restarting at 0; position ids alone do not stop attention from
    crossing samples there, so packed batches carry a 4D boolean block-diagonal mask (True = may
    attend) that the trainer turns into an additive mask in the model's dtype.

    Flash attention 2/3/4, lmforge_varlen (PyTorch's own varlen flash kernel, model/varlen.py) and flex
    attention (`is_varlen`): padding-free. The batch's samples are put
    back to back in one row of shape (1, total tokens) with position ids restarting at 0 for each and
    no attention mask; each sample's first label becomes IGNORE_INDEX so no sample is predicted from the
    one before (the causal shift drops that label anyway when the sample has a row of its own).
    transformers 5.24 then keeps attention inside each sample:
    - flash and lmforge_varlen: `_flash_attention_forward` (or model/varlen.py) runs the varlen kernel on
      cu_seqlens. We send them (`cu_seq_lens_q/k`, `max_length_q/k`) so they are not derived again from the
      position ids in every layer; without them it derives them from the position ids, but only for a batch of one
      row and no attention mask, which is why the batch is one row.
    - flex: `create_causal_mask` builds the BlockMask from the position ids (a sample starts wherever
      they do not go up by one), but only when there is no attention mask and no KV cache
      (TrainingArguments.use_cache is False, the default).
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None = None, attn_implementation: str | None = None
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.attn_implementation = attn_implementation
        self.varlen = is_varlen(attn_implementation)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if self.varlen:
            return self._padding_free(rows)
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

    def _padding_free(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for row in rows:
            ids.extend(row["input_ids"])
            row_positions = row.get("position_ids") or range(len(row["input_ids"]))
            positions.extend(row_positions)
            labels.extend(IGNORE_INDEX if p == 0 else label for p, label in zip(row_positions, row["labels"]))
        if self.pad_to_multiple_of:  # the padding is one more sample, with nothing to learn
            extra = -len(ids) % self.pad_to_multiple_of
            ids += [self.pad_token_id] * extra
            labels += [IGNORE_INDEX] * extra
            positions += range(extra)
        position_ids = torch.tensor([positions], dtype=torch.long)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": position_ids,
        }
        if self.attn_implementation != VARLEN_FLEX:
            batch.update(varlen_kwargs(position_ids))
        return batch


def is_varlen(attn_implementation: str | None) -> bool:
    """True for the attention implementations that take padding-free batches (flash and flex attention).

    Flash kernels from the hub (e.g. "kernels-community/flash-attn2") count as flash.
    """
    name = attn_implementation or ""
    return name == VARLEN_FLEX or name in VARLEN_FLASH or "flash" in name.lower()


def varlen_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """What flash attention's varlen kernel needs, from (1, T) position ids restarting at 0 per sample."""
    cu_seqlens = cu_seqlens_from_positions(position_ids)
    longest = int(cu_seqlens.diff().max())
    return {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": longest, "max_length_k": longest}


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
