"""Preference data through the data cache: a hit gives the fresh build's examples, messages and rejects file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.config.recipe import Recipe
from lmforge.data.build import pipeline

from recipe_builds import build as build_data


def write_pairs(path: Path, n: int = 8, bad: bool = False, reply: str = "is") -> Path:
    rows = [
        {
            "prompt": f"What is {i} plus 1?",
            "chosen": f"{i} plus 1 {reply} {i + 1}.",
            "rejected": f"{i} plus 1 {reply} {i + 2}.",
        }
        for i in range(n)
    ]
    if bad:
        rows[2]["rejected"] = rows[2]["chosen"]
        rows[4]["prompt"] = "word " * 300
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_kto(path: Path, n: int = 6) -> Path:
    rows = [
        {"prompt": f"What is {i} plus 1?", "completion": f"{i} plus 1 is {i + 1 + i % 2}.", "label": i % 2 == 0}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(
    tmp_path: Path,
    data: Path,
    stage: str = "dpo",
    template: str | None = None,
    preference: dict | None = None,
    **data_keys,
) -> Recipe:
    return Recipe(
        stage=stage,
        model={"path": str(tmp_path / "model"), "chat_template": template},
        output=str(tmp_path / "out"),
        preference=preference,
        data={"train": [{"path": str(data)}], "max_length": 64, "cache_dir": str(tmp_path / "cache"), **data_keys},
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def build(r: Recipe, tokenizer, capsys):
    """The bundle, the cache state it reports, and what it printed (the cache line itself left out)."""
    bundle = build_data(r, tokenizer)
    err = capsys.readouterr().err
    said = "cache hit" if bundle.report.cache == "hit" else "cache miss" if bundle.report.cache == "miss" else None
    assert said is None or f"lmforge: data: {said}" in err
    return bundle, bundle.report.cache, [line for line in err.splitlines() if "cache" not in line]


def test_a_hit_gives_the_fresh_pairs_messages_and_rejects(tmp_path, tokenizer, capsys):
    r = recipe(tmp_path, write_pairs(tmp_path / "p.jsonl", bad=True), on_error="skip", eval={"fraction": 0.25})
    fresh, state, fresh_lines = build(r, tokenizer, capsys)
    assert state == "miss" and fresh.report.rejected == 2 and fresh.rejects.count(b"\n") == 2
    cached, state, cached_lines = build(r, tokenizer, capsys)
    assert state == "hit"
    assert (cached.train, cached.eval) == (fresh.train, fresh.eval)
    assert vars(cached.report) == vars(fresh.report) | {"cache": "hit"}
    assert cached_lines == fresh_lines and any("skipped 2 bad records" in line for line in cached_lines)
    assert cached.rejects == fresh.rejects


def test_a_hit_reads_and_encodes_nothing(tmp_path, tokenizer, capsys, monkeypatch):
    r = recipe(tmp_path, write_pairs(tmp_path / "p.jsonl"))
    fresh, _, _ = build(r, tokenizer, capsys)

    def fail(*args, **kwargs):
        raise AssertionError("read or encoded on a cache hit")

    monkeypatch.setattr(pipeline, "_build_fresh", fail)  # where every reading and encoding happens
    cached, state, _ = build(r, tokenizer, capsys)
    assert state == "hit" and cached.train == fresh.train


def test_kto_examples_and_their_mismatched_pairs_come_back_the_same(tmp_path, tokenizer, capsys):
    r = recipe(tmp_path, write_kto(tmp_path / "k.jsonl"), stage="kto", eval={"fraction": 0.34})
    fresh, state, fresh_lines = build(r, tokenizer, capsys)
    cached, again, cached_lines = build(r, tokenizer, capsys)
    assert (state, again) == ("miss", "hit")
    assert "kl_input_ids" in cached.train[0] and isinstance(cached.train[0]["desirable"], int)
    assert (cached.train, cached.eval) == (fresh.train, fresh.eval)
    assert cached_lines == fresh_lines


def test_every_setting_that_shapes_the_examples_misses(tmp_path, tokenizer, tiny_tokenizer_dir, capsys):
    data = write_pairs(tmp_path / "p.jsonl")
    base = recipe(tmp_path, data)
    assert build(base, tokenizer, capsys)[1] == "miss"
    assert build(base, tokenizer, capsys)[1] == "hit"
    assert build(recipe(tmp_path, data, preference={"beta": 0.5}), tokenizer, capsys)[1] == "hit"  # a loss setting
    changes = {
        "max_length": recipe(tmp_path, data, max_length=48),
        "truncation": recipe(tmp_path, data, truncation="drop"),
        "stage": recipe(tmp_path, data, stage="rm"),
        "template": recipe(tmp_path, data, template="chatml"),
        "on_error": recipe(tmp_path, data, on_error="skip"),
        "eval": recipe(tmp_path, data, eval={"fraction": 0.25}),
    }
    for part, changed in changes.items():
        assert build(changed, tokenizer, capsys)[1] == "miss", part
        assert build(changed, tokenizer, capsys)[1] == "hit", part
    bigger = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    bigger.add_tokens(["<lmforge-new-token>"])
    assert build(base, bigger, capsys)[1] == "miss"  # the tokenizer
    first = build(base, tokenizer, capsys)[0]
    write_pairs(data, reply="equals")
    changed, state, _ = build(base, tokenizer, capsys)
    assert state == "miss" and changed.train != first.train  # the data's content, at the same path


def test_cache_false_neither_reads_nor_writes(tmp_path, tokenizer, capsys):
    data = write_pairs(tmp_path / "p.jsonl")
    bundle, state, _ = build(recipe(tmp_path, data, cache=False), tokenizer, capsys)
    assert state == "off" and bundle.train and not (tmp_path / "cache").exists()
    build(recipe(tmp_path, data), tokenizer, capsys)
    assert build(recipe(tmp_path, data, cache=False), tokenizer, capsys)[1] == "off"
