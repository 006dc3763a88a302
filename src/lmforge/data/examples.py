"""The data layer's output contract: encoded examples as flat arrays, the label that carries no loss, and the one
count of trained tokens.

A split of examples is held as flat int32 arrays, all examples back to back, with one length per example
(example k is `input_ids[start_k:start_k + lengths[k]]`), so that it costs a few arrays instead of millions of
Python lists and can be memory-mapped from the data cache. `rows.py` reads them as the trainer wants them.
Only numpy is imported here: packers and losses need IGNORE_INDEX without the chat machinery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

IGNORE_INDEX = -100  # a label the loss leaves out (transformers' and PyTorch's cross-entropy default)


def trained_tokens(labels: Any) -> int:
    """Tokens that carry loss, as the loss sees them: labels after the causal shift (the first label of a row is
    never predicted) that are not IGNORE_INDEX. `labels`: one row (a list or 1-D array) or a batch of rows (a
    2-D array or tensor)."""
    if isinstance(labels, list):  # one row: counted without making an array (this runs once per sample)
        return max(len(labels) - 1, 0) - labels[1:].count(IGNORE_INDEX)
    return int((labels[..., 1:] != IGNORE_INDEX).sum())


@dataclass
class Examples:
    """The examples of one split as flat arrays (module docstring)."""

    input_ids: np.ndarray  # int32, all examples back to back
    labels: np.ndarray  # int32, same layout
    lengths: np.ndarray  # int64, one per example
    position_ids: np.ndarray | None = None  # int32, same layout (packed rows: restarting at each sample)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # int64, one value per example (KTO: desirable)

    @classmethod
    def from_rows(
        cls,
        ids: Sequence[Sequence[int]],
        labels: Sequence[Sequence[int]] | None = None,
        columns: dict[str, Sequence[int]] | None = None,
    ) -> Examples:
        """Flat arrays of rows of token ids and their labels (None: the labels are the ids)."""
        lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
        flat = _flat(ids, int(lengths.sum()))
        return cls(
            input_ids=flat,
            labels=flat.copy() if labels is None else _flat(labels, int(lengths.sum())),
            lengths=lengths,
            columns={k: np.asarray(v, dtype=np.int64) for k, v in (columns or {}).items()},
        )

    @classmethod
    def from_dicts(cls, examples: list[dict], columns: tuple[str, ...] = ()) -> Examples:
        """Flat arrays of dicts with "input_ids" and "labels" (and "position_ids"); `columns` names int values
        each example carries besides."""
        out = cls.from_rows(
            [e["input_ids"] for e in examples],
            [e["labels"] for e in examples],
            {name: [e[name] for e in examples] for name in columns},
        )
        if examples and "position_ids" in examples[0]:
            out.position_ids = _flat([e["position_ids"] for e in examples], len(out.input_ids))
        return out

    @classmethod
    def concat(cls, parts: Iterable[Examples]) -> Examples:
        """The examples of several splits of the same layout, one after the other."""
        parts = list(parts)
        if not parts:
            return cls.from_rows([])

        def cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(arrays).astype(dtype, copy=False)

        first = parts[0]
        return cls(
            input_ids=cat([p.input_ids for p in parts], np.int32),
            labels=cat([p.labels for p in parts], np.int32),
            lengths=cat([p.lengths for p in parts], np.int64),
            position_ids=cat([p.position_ids for p in parts], np.int32) if first.position_ids is not None else None,
            columns={name: cat([p.columns[name] for p in parts], np.int64) for name in first.columns},
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def starts(self) -> np.ndarray:
        """Where each example begins in the flat arrays."""
        return np.cumsum(self.lengths, dtype=np.int64) - self.lengths

    def tokens(self) -> int:
        return int(self.lengths.sum())

    def trained_tokens(self) -> int:
        """`trained_tokens` of every example, summed, without building a row: each example's first label is
        never predicted."""
        trained = self.labels != IGNORE_INDEX
        firsts = self.starts()[self.lengths > 0]
        return int(trained.sum() - trained[firsts].sum())


def _flat(rows: Iterable[Sequence[int]], total: int) -> np.ndarray:
    return np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=total)
