from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from lmforge.config.recipe import Recipe
from lmforge.data.build.packing import best_fit_decreasing, pack, packing_efficiency
from lmforge.data.examples import IGNORE_INDEX, Examples, trained_tokens
from lmforge.data.rows import ExampleRows
from lmforge.errors import LmforgeError

from recipe_builds import build


def long_tail_lengths(n: int, max_length: int, seed: int = 0) -> list[int]:
    """Chat-benchmark-like lengths: log-normal around max_length/8, from a few dozen tokens up to max_length."""
    rng = random.Random(seed)
    mu = math.log(max_length / 8)
    return [int(min(max_length, max(32, rng.lognormvariate(mu, 0.9)))) for _ in range(n)]


def samples(lengths: list[int], seed: int = 0) -> list[dict]:
    """Distinct samples: token ids name the sample; labels mix prompt (-100) and trained tokens."""
    rng = random.Random(seed)
    out = []
    for s, n in enumerate(lengths):
        ids = [1000 * s + k for k in range(n)]
        labels = [t if rng.random() < 0.6 else IGNORE_INDEX for t in ids]
        out.append({"input_ids": ids, "labels": labels})
    return out


def pack_rows(examples: list[dict], max_length: int) -> tuple[list[dict], float]:
    """The packer on these examples, its rows read back as dicts."""
    packed, efficiency = pack(Examples.from_dicts(examples), max_length)
    return list(ExampleRows(packed)), efficiency


def total_trained(rows) -> int:
    return sum(trained_tokens(r["labels"]) for r in rows)


def split_row(row: dict) -> list[tuple[list[int], list[int], list[int]]]:
    """(input_ids, labels, position_ids) of each sample in a packed row, found where the positions restart."""
    starts = [k for k, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
    assert starts[0] == 0
    return [(row["input_ids"][a:b], row["labels"][a:b], row["position_ids"][a:b]) for a, b in zip(starts, starts[1:])]


def test_bins_hold_every_index_once_and_never_overflow():
    lengths = long_tail_lengths(500, 256, seed=1)
    bins = best_fit_decreasing(lengths, 256)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    assert len(bins) >= math.ceil(sum(lengths) / 256)


def test_best_fit_puts_each_sample_in_the_fullest_bin_that_fits():
    # decreasing: 6 opens bin A, 5 opens B, 4 fits only A (6+4), 3 -> B (5+3), 2 -> B (the fuller one with room)
    assert best_fit_decreasing([3, 6, 2, 5, 4], 10) == [[1, 4], [3, 0, 2]]
    # first fit would put the 2 into the first bin with room (7+2); best fit fills the 8 to 10
    assert best_fit_decreasing([7, 8, 2], 10) == [[1, 2], [0]]


def test_packing_is_deterministic_and_keeps_order_among_equal_lengths():
    lengths = [5, 3, 5, 3, 5, 3, 2]
    assert best_fit_decreasing(lengths, 8) == best_fit_decreasing(list(lengths), 8)
    assert best_fit_decreasing(lengths, 8) == [[0, 1], [2, 3], [4, 5], [6]]
    rows_a, eff_a = pack_rows(samples(long_tail_lengths(300, 512)), 512)
    rows_b, eff_b = pack_rows(samples(long_tail_lengths(300, 512)), 512)
    assert rows_a == rows_b and eff_a == eff_b


def test_packed_rows_keep_every_token_with_positions_restarting_and_no_cross_sample_label():
    examples = samples(long_tail_lengths(200, 128, seed=2))
    rows, efficiency = pack_rows(examples, 128)
    seen = []
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) <= 128
        for ids, labels, positions in split_row(row):
            assert positions == list(range(len(ids)))
            original = examples[ids[0] // 1000]
            assert ids == original["input_ids"]
            assert labels == [IGNORE_INDEX] + original["labels"][1:]  # never predicted from the sample before
            seen.append(ids[0] // 1000)
    assert sorted(seen) == list(range(len(examples)))
    tokens = sum(len(e["input_ids"]) for e in examples)
    assert efficiency == pytest.approx(tokens / (len(rows) * 128))
    assert total_trained(rows) == total_trained(examples)  # packing changes no trained token


def test_packed_arrays_are_the_bins_samples_back_to_back():
    """The packer against the rows written out by hand from the bins: each bin's samples in bin order, each
    sample's first label IGNORE_INDEX, positions restarting at each sample."""
    examples = samples(long_tail_lengths(300, 64, seed=3))
    rows, efficiency = pack_rows(examples, 64)
    bins = best_fit_decreasing([len(e["input_ids"]) for e in examples], 64)
    expected = []
    for members in bins:
        parts = [examples[i] for i in members]
        expected.append(
            {
                "input_ids": [t for e in parts for t in e["input_ids"]],
                "labels": [t for e in parts for t in [IGNORE_INDEX, *e["labels"][1:]]],
                "position_ids": [k for e in parts for k in range(len(e["input_ids"]))],
            }
        )
    assert rows == expected
    assert efficiency == packing_efficiency([len(e["input_ids"]) for e in examples], len(bins), 64)


@pytest.mark.parametrize("max_length", [256, 1024, 2048])
def test_efficiency_on_a_long_tail_chat_distribution(max_length):
    lengths = long_tail_lengths(2000, max_length)
    bins = best_fit_decreasing(lengths, max_length)
    assert packing_efficiency(lengths, len(bins), max_length) >= 0.95


def test_a_sample_longer_than_max_length_is_an_error():
    with pytest.raises(LmforgeError, match="data.max_length"):
        pack_rows([{"input_ids": [1] * 9, "labels": [1] * 9}], 8)
    assert pack_rows([], 8) == ([], 0.0)


def sft_recipe(tok_dir: Path, train: Path, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "stage": "sft",
            "model": {"path": str(tok_dir)},
            "data": {"train": [{"path": str(train)}], "max_length": 64, **data},
            "output": "unused",
        }
    )


def test_sft_packing_hook_packs_train_and_eval_and_reports_efficiency(tiny_tokenizer_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    rng = random.Random(0)
    records = [
        {
            "messages": [
                {"role": "user", "content": "q " * rng.randint(1, 12)},
                {"role": "assistant", "content": "a " * rng.randint(1, 12)},
            ]
        }
        for _ in range(40)
    ]
    train = tmp_path / "chat.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    plain = build(sft_recipe(tiny_tokenizer_dir, train, eval={"fraction": 0.2}), tok, rejects_path=tmp_path / "r.jsonl")
    recipe = sft_recipe(tiny_tokenizer_dir, train, eval={"fraction": 0.2}, packing=True)
    packed = build(recipe, tok, rejects_path=tmp_path / "r.jsonl")
    assert "packed 32 train samples into" in capsys.readouterr().err
    assert packed.report.samples == plain.report.samples == 32
    assert packed.report.packing_efficiency == pytest.approx(packed.report.tokens / (len(packed.train) * 64))
    for bundle_rows, plain_rows in ((packed.train, plain.train), (packed.eval, plain.eval)):
        assert len(bundle_rows) < len(plain_rows)
        pieces = sorted(tuple(ids) for row in bundle_rows for ids, _, _ in split_row(row))
        assert pieces == sorted(tuple(e["input_ids"]) for e in plain_rows)
        assert total_trained(bundle_rows) == total_trained(plain_rows)
    again = build(recipe, tok, rejects_path=tmp_path / "r.jsonl")  # from the cache: packed the same way
    assert again.report.cache == "hit" and again.train == packed.train
