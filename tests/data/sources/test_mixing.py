from __future__ import annotations

import random
from collections import Counter

import pytest

from lmforge.config.settings import Source
from lmforge.data.records import Text
from lmforge.data.sources.mixing import draw, mix, source_labels, take_eval, targets
from lmforge.errors import LmforgeError


def part(label: str, n: int, **mixing) -> tuple[Source, list[str]]:
    return Source(path=label, **mixing), [f"{label}:{i}" for i in range(n)]


def origin(record: str) -> str:
    return record.split(":")[0]


def error_of(parts, seed: int = 0) -> str:
    with pytest.raises(LmforgeError) as err:
        mix(parts, seed)
    return str(err.value)


def test_no_mixing_keys_is_plain_concatenation_in_order():
    records, counts = mix([part("a", 3), part("b", 2)], seed=1)
    assert records == ["a:0", "a:1", "a:2", "b:0", "b:1"]
    assert counts == {"a": 3, "b": 2}


def test_weight_repeats_whole_copies_then_a_seeded_subsample():
    records, counts = mix([part("a", 4, weight=2.5), part("b", 3)], seed=7)
    assert counts == {"a": 10, "b": 3} and len(records) == 13
    seen = Counter(r for r in records if origin(r) == "a")
    assert sorted(seen.values()) == [2, 2, 3, 3]  # two full copies + 2 of 4 drawn once more
    assert Counter(r for r in records if origin(r) == "b") == {"b:0": 1, "b:1": 1, "b:2": 1}


def test_weight_below_one_is_a_random_subset_without_repeats():
    records, counts = mix([part("a", 10, weight=0.5)], seed=3)
    assert counts == {"a": 5}
    assert len(set(records)) == 5


def test_weight_rounds_half_up():
    assert targets([Source(path="a", weight=0.5), Source(path="b", weight=0.25)], [5, 10]) == [3, 3]


def test_samples_is_exact_both_ways():
    records, counts = mix([part("a", 3, samples=7), part("b", 10, samples=4)], seed=0)
    assert counts == {"a": 7, "b": 4}
    assert Counter(map(origin, records)) == {"a": 7, "b": 4}
    assert len({r for r in records if origin(r) == "b"}) == 4


def test_ratios_for_every_source_split_the_total_size():
    records, counts = mix([part("a", 100, ratio=0.5), part("b", 50, ratio=0.5)], seed=0)
    assert counts == {"a": 75, "b": 75}
    assert Counter(map(origin, records)) == {"a": 75, "b": 75}
    b = Counter(r for r in records if origin(r) == "b")
    assert sorted(set(b.values())) == [1, 2] and sum(v == 2 for v in b.values()) == 25


def test_ratios_use_largest_remainder_so_the_total_is_exact():
    sources = [Source(path=p, ratio=1 / 3) for p in "abc"]
    assert targets(sources, [10, 10, 11]) == [11, 10, 10]  # 31 records, the tie goes to the first
    assert targets([Source(path="a", ratio=0.7), Source(path="b", ratio=0.3)], [5, 6]) == [8, 3]


def test_ratio_next_to_sources_without_ratio_is_its_exact_share():
    records, counts = mix([part("a", 60), part("b", 10, ratio=0.25)], seed=0)
    assert counts == {"a": 60, "b": 20}
    assert counts["b"] / len(records) == 0.25


def test_ratio_with_weight_and_samples_sources():
    sources = [Source(path="a", samples=30), Source(path="b", weight=2), Source(path="c", ratio=0.5)]
    assert targets(sources, [5, 10, 7]) == [30, 20, 50]
    two = [Source(path="a"), Source(path="b", ratio=0.2), Source(path="c", ratio=0.3)]
    assert targets(two, [50, 1, 1]) == [50, 20, 30]


def test_mix_is_deterministic_per_seed_and_interleaves():
    parts = [part("a", 20, weight=1.5), part("b", 20, ratio=0.5)]
    first, _ = mix(parts, seed=11)
    assert mix(parts, seed=11)[0] == first
    assert mix(parts, seed=12)[0] != first
    origins = [origin(r) for r in first]
    assert origins != sorted(origins)  # not a block of a then a block of b


def test_one_sources_draw_does_not_depend_on_the_others():
    alone, _ = mix([part("a", 10, weight=0.5), part("b", 3)], seed=5)
    beside, _ = mix([part("a", 10, weight=0.5), part("b", 30)], seed=5)
    assert {r for r in alone if origin(r) == "a"} == {r for r in beside if origin(r) == "a"}


def test_draw_keeps_order_of_copies_and_sorted_remainder():
    out = draw(["x", "y", "z"], 7, random.Random(0))
    assert out[:6] == ["x", "y", "z", "x", "y", "z"] and out[6] in {"x", "y", "z"}
    assert draw(["x"], 0, random.Random(0)) == []


def test_ratio_errors():
    assert "sum to 1; they sum to 0.8" in error_of([part("a", 5, ratio=0.5), part("b", 5, ratio=0.3)])
    assert "leaves no room" in error_of([part("a", 5, ratio=0.6), part("b", 5, ratio=0.4), part("c", 5)])
    assert "lower the ratios" in error_of([part("a", 5, ratio=1.0), part("b", 5)])


def test_zero_targets_and_empty_sources_are_errors():
    assert "would contribute 0 records with weight 0.01" in error_of([part("a", 10, weight=0.01)])
    assert "a has no records, so samples 3" in error_of([part("a", 0, samples=3), part("b", 2)])
    assert "no records" in error_of([part("a", 0, ratio=0.5), part("b", 2)])


def test_empty_source_without_key_is_fine_when_others_mix():
    records, counts = mix([part("a", 0), part("b", 2, samples=3)], seed=0)
    assert counts == {"a": 0, "b": 3} and len(records) == 3


def test_duplicate_labels_stay_apart():
    assert source_labels([Source(path="x"), Source(path="x"), Source(hub="h")]) == ["x", "x #2", "hub:h"]
    _, counts = mix([part("x", 2, samples=1), part("x", 2, samples=3)], seed=0)
    assert counts == {"x": 1, "x #2": 3}


def test_eval_fraction_split_is_seeded_and_keeps_file_order():
    records = [Text(str(k)) for k in range(20)]
    train, evaluation = take_eval(records, 0.2, seed=42)
    assert len(evaluation) == 4 and len(train) == 16
    assert sorted(train + evaluation, key=lambda r: int(r.text)) == records
    assert evaluation == sorted(evaluation, key=lambda r: int(r.text))
    assert take_eval(records, 0.2, seed=42) == (train, evaluation)
    assert take_eval(records, 0.2, seed=7)[1] != evaluation
    assert len(take_eval(records, 0.01, seed=42)[1]) == 1  # at least one
    with pytest.raises(LmforgeError, match="leaves nothing to train on"):
        take_eval(records[:1], 0.2, seed=42)


def test_eval_records_repeated_by_mixing_never_train():
    records = [Text(str(k)) for k in range(5)]
    mixed = records * 3  # what weight: 3 gives: the same objects three times
    train, evaluation = take_eval(mixed, 0.2, seed=42)
    assert evaluation and len({id(r) for r in evaluation}) == len(evaluation)
    assert not {id(r) for r in evaluation} & {id(r) for r in train}
    assert len(train) == 3 * (5 - len(evaluation))
