from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from lmforge.config.recipe import Recipe
from lmforge.data.build import cache
from lmforge.data.examples import Examples
from lmforge.data.rows import ExampleRows

from recipe_builds import build as build_data
from shared_assets import SHARED, only

QWEN3 = SHARED / "tokenizers" / "qwen3"


def write_chat(path: Path, n: int = 6, reply: str = "Answer") -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"Question {k}"}, {"role": "assistant", "content": f"{reply} {k}."}]}
        for k in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def recipe(train: Path, cache_dir: Path, template: str | None = None, model: Path = QWEN3, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"path": str(model), "chat_template": template},
            "data": {"train": [{"path": str(train)}], "cache_dir": str(cache_dir), **data},
            "output": str(train.parent / "out"),
        }
    )


def build(r: Recipe, tok, capsys) -> tuple:
    bundle = build_data(r, tok)
    err = capsys.readouterr().err
    assert ("cache hit" in err) == (bundle.report.cache == "hit")
    return bundle, bundle.report.cache


def test_examples_round_trip_through_an_entry(tmp_path):
    examples = [
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 0]},
        {"input_ids": [4], "labels": [4], "position_ids": [0]},
    ]
    flat = Examples.from_dicts(examples)
    entry = cache.save(tmp_path, "k" * 64, {"train": flat}, {"report": {"samples": 2}}, b'{"x": 1}\n')
    assert entry == tmp_path / ("k" * 64) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    splits, meta, rejects = cache.load(tmp_path, "k" * 64)
    assert list(ExampleRows(splits["train"])) == examples
    assert meta["report"] == {"samples": 2} and rejects == b'{"x": 1}\n'
    assert cache.load(tmp_path, "0" * 64) is None


def test_per_example_columns_round_trip_beside_dotted_split_names(tmp_path):
    kto = [
        {"input_ids": [1, 2], "labels": [-100, 2], "desirable": 1, "prompt_length": 1},
        {"input_ids": [3, 4, 5], "labels": [-100, -100, 5], "desirable": 0, "prompt_length": 2},
    ]
    side = [{"input_ids": [7, 8], "labels": [-100, 8]}]
    splits = {
        "train": Examples.from_dicts(kto, columns=("desirable", "prompt_length")),
        "train.chosen": Examples.from_dicts(side),
    }
    cache.save(tmp_path, "c" * 64, splits, {}, b"")
    loaded, _, _ = cache.load(tmp_path, "c" * 64)
    assert list(ExampleRows(loaded["train"])) == kto and list(ExampleRows(loaded["train.chosen"])) == side
    assert loaded["train.chosen"].columns == {}


def test_a_half_written_or_damaged_entry_is_not_used(tmp_path, capsys):
    (tmp_path / ".kkkk-tmp").mkdir()  # what a crash mid-write leaves: a hidden temporary directory
    (tmp_path / ".kkkk-tmp" / cache.ARRAYS_FILE).write_bytes(b"partial")
    assert cache.load(tmp_path, "kkkk") is None
    flat = Examples.from_dicts([{"input_ids": [1], "labels": [1]}])
    entry = cache.save(tmp_path, "kkkk", {"train": flat}, {}, b"")
    (entry / cache.ARRAYS_FILE).write_bytes(b"damaged")
    assert cache.load(tmp_path, "kkkk") is None
    assert f"not using the cache entry {entry}: arrays.npz has 7 bytes" in capsys.readouterr().err


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env"))
    assert cache.cache_root(str(tmp_path / "recipe")) == tmp_path / "recipe" / "data"
    assert cache.cache_root(None) == tmp_path / "env" / "data"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_root(None) == Path("~/.cache/lmforge/data").expanduser()


@only("qwen3")
def test_second_run_hits_and_every_key_part_invalidates(shared_tokenizer_dir, tmp_path, capsys):
    tok = AutoTokenizer.from_pretrained(shared_tokenizer_dir)
    train = write_chat(tmp_path / "train.jsonl")
    store = tmp_path / "cache"
    base = recipe(train, store)
    first, state = build(base, tok, capsys)
    assert state == "miss" and len(list((store / "data").iterdir())) == 1
    again, state = build(base, tok, capsys)
    assert state == "hit"
    assert again.train == first.train and vars(again.report) | {"cache": "miss"} == vars(first.report)

    moved = shutil.copy(train, tmp_path / "moved.jsonl")
    assert build(recipe(moved, store), tok, capsys)[1] == "hit"  # keyed by content, not by path
    changes = {
        "max_length": recipe(train, store, max_length=1024),
        "template": recipe(train, store, template="chatml"),
        "train_on": recipe(train, store, train_on="last_assistant"),
        "split_turns": recipe(train, store, split_turns="always"),
        "truncation": recipe(train, store, truncation="drop"),
    }
    for part, changed in changes.items():
        assert build(changed, tok, capsys)[1] == "miss", part
        assert build(changed, tok, capsys)[1] == "hit", part
    bigger = AutoTokenizer.from_pretrained(shared_tokenizer_dir)
    bigger.add_tokens(["<lmforge-new-token>"])
    assert build(base, bigger, capsys)[1] == "miss"  # the tokenizer
    write_chat(train, reply="Reply")
    assert build(base, tok, capsys)[1] == "miss"  # the data's content
    assert build(base, tok, capsys)[1] == "hit"
    entries = len(list((store / "data").iterdir()))
    build(recipe(train, store, cache=False), tok, capsys)
    assert len(list((store / "data").iterdir())) == entries  # cache: false neither reads nor writes


@only("qwen3")
def test_a_cache_hit_rewrites_the_rejects_file(shared_tokenizer_dir, tmp_path, capsys):
    tok = AutoTokenizer.from_pretrained(shared_tokenizer_dir)
    train = write_chat(tmp_path / "train.jsonl")
    with train.open("a") as f:
        f.write("not json\n")
    r = recipe(train, tmp_path / "cache", on_error="skip")
    fresh, _ = build(r, tok, capsys)
    bundle, state = build(r, tok, capsys)
    assert state == "hit" and bundle.report.rejected == 1 and bundle.rejects == fresh.rejects
    assert b"not json" in bundle.rejects


def test_examples_flat_arrays_are_int32():
    flat = Examples.from_dicts([{"input_ids": [150000, 2], "labels": [-100, 2]}])
    assert flat.input_ids.dtype == np.int32 and flat.lengths.tolist() == [2]


def test_a_hit_maps_the_arrays_read_only_with_the_values_np_load_reads(tmp_path):
    flat = Examples.from_dicts([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    empty = Examples(input_ids=np.zeros(0, np.int32), labels=np.zeros(0, np.int32), lengths=np.zeros(0, np.int64))
    entry = cache.save(tmp_path, "m" * 64, {"train": flat, "eval": empty}, {}, b"")
    mapped = cache.mapped_arrays(entry / cache.ARRAYS_FILE)
    with np.load(entry / cache.ARRAYS_FILE) as read:
        assert sorted(mapped) == sorted(read.files)
        for name in read.files:
            assert mapped[name].dtype == read[name].dtype and np.array_equal(mapped[name], read[name])
    assert not mapped["train.input_ids"].flags.writeable
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **mapped)
    compressed.replace(entry / cache.ARRAYS_FILE)  # a new file: the mapped one stays valid while it is used
    assert mapped["train.input_ids"].tolist() == [1, 2, 3, 4]
    del mapped
    # compressed members cannot be mapped: the entry is rebuilt
    assert cache.load(tmp_path, "m" * 64) is None


def test_a_truncated_arrays_file_is_not_used(tmp_path, capsys):
    flat = Examples.from_dicts([{"input_ids": list(range(100)), "labels": list(range(100))}])
    entry = cache.save(tmp_path, "t" * 64, {"train": flat}, {}, b"")
    data = (entry / cache.ARRAYS_FILE).read_bytes()
    (entry / cache.ARRAYS_FILE).write_bytes(data[:200] + data[-300:])  # bytes cut out of the middle
    assert cache.load(tmp_path, "t" * 64) is None
    assert "arrays.npz has 500 bytes" in capsys.readouterr().err


def flip_byte(path: Path, at: int) -> None:
    """The file changed in place at the same size (its inode, size and name kept)."""
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_an_entry_changed_in_place_is_found_rebuilt_and_replaced(tiny_tokenizer_dir, tmp_path, capsys):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    r = recipe(write_chat(tmp_path / "train.jsonl"), tmp_path / "cache", model=tiny_tokenizer_dir)
    first, _ = build(r, tok, capsys)
    (entry,) = (tmp_path / "cache" / "data").iterdir()
    held = cache.mapped_arrays(entry / cache.ARRAYS_FILE)  # as another process reading the entry would hold it
    before = held["train.input_ids"].copy()
    arrays = entry / cache.ARRAYS_FILE
    size = arrays.stat().st_size
    flip_byte(arrays, size - 100)  # inside the last array's tokens: same size, same zip structure
    rebuilt = build_data(r, tok)
    assert rebuilt.report.cache == "miss" and rebuilt.train == first.train
    err = capsys.readouterr().err
    assert f"not using the cache entry {entry}: arrays.npz does not match its checksum" in err
    again, state = build(r, tok, capsys)
    assert state == "hit" and again.train == first.train
    assert [p.name for p in (tmp_path / "cache" / "data").iterdir()] == [entry.name]  # replaced, nothing left aside
    assert len(held["train.input_ids"].tolist()) == len(before)  # the old mapping still reads after the replace


def test_a_truncated_entry_is_rebuilt_and_replaced(tiny_tokenizer_dir, tmp_path, capsys):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    r = recipe(write_chat(tmp_path / "train.jsonl"), tmp_path / "cache", model=tiny_tokenizer_dir)
    first, _ = build(r, tok, capsys)
    (entry,) = (tmp_path / "cache" / "data").iterdir()
    arrays = entry / cache.ARRAYS_FILE
    with arrays.open("r+b") as f:
        f.truncate(arrays.stat().st_size // 2)
    rebuilt = build_data(r, tok)
    err = capsys.readouterr().err
    assert rebuilt.report.cache == "miss" and rebuilt.train == first.train
    assert f"not using the cache entry {entry}: arrays.npz has" in err and "cut short" in err
    again, state = build(r, tok, capsys)
    assert state == "hit" and again.train == first.train


def test_an_entry_without_checksums_is_rebuilt(tmp_path, capsys):
    flat = Examples.from_dicts([{"input_ids": [1, 2], "labels": [1, 2]}])
    entry = cache.save(tmp_path, "o" * 64, {"train": flat}, {"report": {}}, b"")
    (entry / cache.META_FILE).write_text(json.dumps({"report": {}, "splits": ["train"]}))  # as lmforge-cache-2 wrote
    assert cache.load(tmp_path, "o" * 64) is None
    assert "meta.json has no checksums: written by an older lmforge; rebuilding it" in capsys.readouterr().err
    cache.save(tmp_path, "o" * 64, {"train": flat}, {"report": {}}, b"")
    assert cache.load(tmp_path, "o" * 64) is not None


def test_meta_changed_in_place_or_rejects_changed_are_found(tmp_path, capsys):
    flat = Examples.from_dicts([{"input_ids": [1, 2], "labels": [1, 2]}])
    entry = cache.save(tmp_path, "r" * 64, {"train": flat}, {"report": {"samples": 1}}, b'{"x": 1}\n')
    meta = entry / cache.META_FILE
    meta.write_text(meta.read_text().replace('"samples": 1', '"samples": 7'))
    assert cache.load(tmp_path, "r" * 64) is None
    assert "meta.json does not match its checksum" in capsys.readouterr().err
    entry = cache.save(tmp_path, "r" * 64, {"train": flat}, {"report": {"samples": 1}}, b'{"x": 1}\n')
    (entry / cache.REJECTS_FILE).write_bytes(b'{"x": 2}\n')
    assert cache.load(tmp_path, "r" * 64) is None
    assert "rejects.jsonl does not match its checksum" in capsys.readouterr().err


def test_waiting_ranks_wait_past_a_damaged_entry_until_it_is_replaced(tmp_path, capsys):
    flat = Examples.from_dicts([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}])
    entry = cache.save(tmp_path, "w" * 64, {"train": flat}, {}, b"")
    flip_byte(entry / cache.ARRAYS_FILE, (entry / cache.ARRAYS_FILE).stat().st_size - 30)
    got = []
    waiter = threading.Thread(target=lambda: got.append(cache.wait_for(tmp_path, "w" * 64, poll=0.01)), daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # the damaged entry is not used
    cache.save(tmp_path, "w" * 64, {"train": flat}, {}, b"")  # what the main process does after its own load
    waiter.join(5)
    assert not waiter.is_alive() and list(ExampleRows(got[0][0]["train"])) == [
        {"input_ids": [1, 2, 3], "labels": [1, 2, 3]}
    ]
    assert capsys.readouterr().err.count("waiting for rank 0 to rebuild it") == 1
