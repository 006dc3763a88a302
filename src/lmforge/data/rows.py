"""The examples of a split as the trainer reads them: rows looked up in the flat arrays when asked for.

`examples.Examples` holds a split as flat arrays (all examples back to back, and their lengths); the
trainer asks for one example at a time, as a dict of plain int lists. `ExampleRows` answers that from
the arrays on demand instead of building every dict up front: a split of 100k examples costs one
cumulative sum to open (nothing per example), and the arrays may be memory-mapped from the data cache.
`PairRows` does the same for preference pairs, whose two sides are stored as two such splits, `KTORows` for KTO
examples with their mismatched pairs, and `WithColumns` adds values computed later (the precomputed reference
log-probabilities): rows built on demand are new dicts each time, so nothing may be stored by changing a row.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lmforge.data.examples import IGNORE_INDEX, Examples


class _Rows(Sequence):
    """What both kinds of rows share: indexing (an int, a negative int, a slice), iteration and equality
    with any sequence of the same rows."""

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._row(k) for k in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        return self._row(index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._row(k) for k in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # mutable arrays underneath: not hashable, like a list

    @abstractmethod
    def _row(self, k: int) -> dict[str, Any]:
        """Example k (0 <= k < len) as a dict of plain values."""


class ExampleRows(_Rows):
    """A read-only sequence of {"input_ids", "labels"} (+ "position_ids", + per-example columns) dicts."""

    def __init__(self, examples: Examples) -> None:
        self.examples = examples
        ends = np.cumsum(examples.lengths, dtype=np.int64)
        self._starts = (ends - examples.lengths).tolist()
        self._ends = ends.tolist()

    def __len__(self) -> int:
        return len(self._ends)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExampleRows):
            return _same_examples(self.examples, other.examples)
        return super().__eq__(other)

    def lengths(self) -> list[int]:
        """Each example's token count, from the arrays (no row is built)."""
        return self.examples.lengths.tolist()

    def __repr__(self) -> str:
        return f"ExampleRows({len(self)} examples, {int(self.examples.lengths.sum())} tokens)"

    def _row(self, k: int) -> dict[str, Any]:
        ex, start, end = self.examples, self._starts[k], self._ends[k]
        row: dict[str, Any] = {"input_ids": ex.input_ids[start:end].tolist(), "labels": ex.labels[start:end].tolist()}
        if ex.position_ids is not None:
            row["position_ids"] = ex.position_ids[start:end].tolist()
        for name, values in ex.columns.items():
            row[name] = int(values[k])
        return row


class PairRows(_Rows):
    """Preference pairs, {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}, read
    from the arrays of the two sides (example k of each side is pair k's)."""

    def __init__(self, chosen: Examples, rejected: Examples) -> None:
        if len(chosen.lengths) != len(rejected.lengths):
            raise ValueError(f"PairRows: {len(chosen.lengths)} chosen but {len(rejected.lengths)} rejected examples")
        self.sides = {"chosen": ExampleRows(chosen), "rejected": ExampleRows(rejected)}

    def __len__(self) -> int:
        return len(self.sides["chosen"])

    def __repr__(self) -> str:
        return f"PairRows({len(self)} pairs)"

    def _row(self, k: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for side, rows in self.sides.items():
            example = rows._row(k)
            row[f"{side}_input_ids"], row[f"{side}_labels"] = example["input_ids"], example["labels"]
        return row


class KTORows(_Rows):
    """KTO examples, {"input_ids", "labels", "desirable", "prompt_length", "kl_input_ids", "kl_labels"}: each with
    its mismatched pair for the KL estimate, its prompt followed by the completion of the example
    `kl_mismatch_order(n)[k]` (the one before it), cut at max_length."""

    def __init__(self, examples: Examples, max_length: int) -> None:
        self.rows, self.max_length = ExampleRows(examples), max_length
        self.partner = kl_mismatch_order(len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"KTORows({len(self)} examples)"

    def _row(self, k: int) -> dict[str, Any]:
        row, other = self.rows._row(k), self.rows._row(self.partner[k])
        prompt = row["input_ids"][: row["prompt_length"]]
        cut_at = other["prompt_length"]
        row["kl_input_ids"] = (prompt + other["input_ids"][cut_at:])[: self.max_length]
        row["kl_labels"] = ([IGNORE_INDEX] * len(prompt) + other["labels"][cut_at:])[: self.max_length]
        return row


def kl_mismatch_order(batch_size: int) -> list[int]:
    """For KTO's KL estimate: prompt i is paired with completion order[i] = i-1 (prompt 0 with the last).

    The mismatched completions are the batch's own completions, each with another prompt, as in the
    KTO paper and TRL. A batch of one pairs the example with itself (the estimate is then its own r).
    """
    return [(i - 1) % batch_size for i in range(batch_size)]


class WithColumns(_Rows):
    """The rows of a sequence, each with its values of the given columns added."""

    def __init__(self, rows: Sequence[dict], columns: dict[str, list]) -> None:
        for name, values in columns.items():
            if len(values) != len(rows):
                raise ValueError(f"WithColumns: column {name!r} has {len(values)} values for {len(rows)} rows")
        self.rows, self.columns = rows, columns

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"WithColumns({self.rows!r}, {', '.join(self.columns)})"

    def _row(self, k: int) -> dict[str, Any]:
        return {**self.rows[k], **{name: values[k] for name, values in self.columns.items()}}


def _same_examples(a: Examples, b: Examples) -> bool:
    if (a.position_ids is None) != (b.position_ids is None) or set(a.columns) != set(b.columns):
        return False
    pairs = [
        (a.input_ids, b.input_ids),
        (a.labels, b.labels),
        (a.lengths, b.lengths),
        *([(a.position_ids, b.position_ids)] if a.position_ids is not None else []),
        *((a.columns[name], b.columns[name]) for name in a.columns),
    ]
    return all(np.array_equal(x, y) for x, y in pairs)
