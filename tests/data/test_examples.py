"""The output contract: flat examples and the one count of trained tokens."""

import numpy as np
import torch

from lmforge.data.examples import IGNORE_INDEX, Examples, trained_tokens
from lmforge.data.rows import ExampleRows

ROWS = [[5, 6, 7, 8], [9], [], [10, 11]]
LABELS = [[IGNORE_INDEX, 6, IGNORE_INDEX, 8], [9], [], [IGNORE_INDEX, 11]]


def test_trained_tokens_leave_out_the_first_label_and_ignored_ones():
    assert [trained_tokens(labels) for labels in LABELS] == [2, 0, 0, 1]  # 6 and 8; a lone token predicts nothing
    batch = [[IGNORE_INDEX, 1, 2], [3, IGNORE_INDEX, 4]]
    assert trained_tokens(np.array(batch)) == trained_tokens(torch.tensor(batch)) == 3  # row by row


def test_flat_examples_hold_the_rows_back_to_back():
    ex = Examples.from_rows(ROWS, LABELS, {"desirable": [1, 0, 1, 0]})
    assert ex.input_ids.dtype == np.int32 and ex.lengths.tolist() == [4, 1, 0, 2] and len(ex) == 4
    assert ex.starts().tolist() == [0, 4, 5, 5] and ex.tokens() == 7
    assert ex.trained_tokens() == sum(trained_tokens(labels) for labels in LABELS) == 3
    rows = list(ExampleRows(ex))
    assert [r["input_ids"] for r in rows] == ROWS and [r["labels"] for r in rows] == LABELS
    assert [r["desirable"] for r in rows] == [1, 0, 1, 0]
    assert Examples.from_rows(ROWS).labels.tolist() == ex.input_ids.tolist()  # no labels: the ids


def test_concat_keeps_the_order_and_the_columns():
    a = Examples.from_rows(ROWS[:2], LABELS[:2], {"k": [1, 2]})
    b = Examples.from_rows(ROWS[2:], LABELS[2:], {"k": [3, 4]})
    both = Examples.concat([a, b])
    assert list(ExampleRows(both)) == list(ExampleRows(Examples.from_rows(ROWS, LABELS, {"k": [1, 2, 3, 4]})))
    assert len(Examples.concat([])) == 0
