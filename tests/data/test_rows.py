import numpy as np
import pytest

from lmforge.data.examples import Examples
from lmforge.data.rows import ExampleRows, PairRows, WithColumns

EXAMPLES = [
    {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 0]},
    {"input_ids": [4], "labels": [4], "position_ids": [0]},
    {"input_ids": [5, 6], "labels": [-100, 6], "position_ids": [0, 1]},
]


def test_rows_read_like_the_list_of_dicts_they_stand_for():
    rows = ExampleRows(Examples.from_dicts(EXAMPLES))
    assert len(rows) == 3 and list(rows) == EXAMPLES
    assert rows[0] == EXAMPLES[0] and rows[-1] == EXAMPLES[-1] and rows[1:] == EXAMPLES[1:]
    assert all(type(t) is int for t in rows[2]["input_ids"])  # plain ints, as the collator expects
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(IndexError):
        rows[-4]
    ((first, *_),) = [rows]
    assert first == EXAMPLES[0]


def test_rows_carry_per_example_columns_and_compare_by_content():
    kto = [
        {"input_ids": [1, 2], "labels": [-100, 2], "desirable": 1},
        {"input_ids": [3], "labels": [3], "desirable": 0},
    ]
    rows = ExampleRows(Examples.from_dicts(kto, columns=("desirable",)))
    assert list(rows) == kto and rows == kto
    assert rows == ExampleRows(Examples.from_dicts(kto, columns=("desirable",)))
    assert rows != ExampleRows(Examples.from_dicts(kto))  # the column is missing
    changed = [dict(kto[0]), {**kto[1], "labels": [-100]}]
    assert rows != ExampleRows(Examples.from_dicts(changed, columns=("desirable",))) and rows != changed


def test_empty_rows():
    empty = Examples(input_ids=np.zeros(0, np.int32), labels=np.zeros(0, np.int32), lengths=np.zeros(0, np.int64))
    rows = ExampleRows(empty)
    assert len(rows) == 0 and list(rows) == [] and rows == []


def test_pair_rows_read_both_sides_and_equal_the_pairs_they_hold():
    chosen = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    rejected = [{"input_ids": [1, 2], "labels": [-100, 9]}, {"input_ids": [5, 6], "labels": [5, 6]}]
    rows = PairRows(Examples.from_dicts(chosen), Examples.from_dicts(rejected))
    pairs = [
        {
            "chosen_input_ids": c["input_ids"],
            "chosen_labels": c["labels"],
            "rejected_input_ids": r["input_ids"],
            "rejected_labels": r["labels"],
        }
        for c, r in zip(chosen, rejected)
    ]
    assert len(rows) == 2 and rows[1] == pairs[1] and rows[-2] == pairs[0] and rows[0:2] == pairs
    assert rows == pairs and list(rows) == pairs and rows != pairs[:1]
    with pytest.raises(IndexError):
        rows[2]
    with pytest.raises(ValueError, match="2 chosen but 1 rejected"):
        PairRows(Examples.from_dicts(chosen), Examples.from_dicts(rejected[:1]))


def test_with_columns_adds_values_to_rows_built_on_each_read():
    examples = [{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}]
    rows = ExampleRows(Examples.from_dicts(examples))
    rows[0]["score"] = 1.0  # a row built on demand is a new dict: changing it stores nothing
    assert "score" not in rows[0]
    scored = WithColumns(rows, {"score": [0.5, -1.5]})
    assert scored[1] == {"input_ids": [3], "labels": [3], "score": -1.5}
    assert [r["score"] for r in scored] == [0.5, -1.5]
    assert scored[:1] == [{"input_ids": [1, 2], "labels": [1, 2], "score": 0.5}]
    with pytest.raises(ValueError, match="'score' has 1 values for 2 rows"):
        WithColumns(rows, {"score": [0.5]})
