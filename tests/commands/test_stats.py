"""`lmforge data stats` figures on known examples (the preference stages' figures: test_inspect_pairs.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lmforge.commands.stats import dataset_stats, packed_bins, percentile, run_stats
from lmforge.config.recipe import Recipe
from lmforge.data.examples import IGNORE_INDEX

from shared_assets import only


def example(length: int, trained: int) -> dict:
    """A sample of `length` tokens whose last `trained` tokens carry loss."""
    ids = list(range(1, length + 1))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (length - trained) + ids[length - trained :]}


def test_stats_figures_on_a_known_dataset():
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    stats = dataset_stats([example(n, n // 10) for n in lengths], max_length=100)
    assert stats["samples"] == 10 and stats["tokens"] == 550
    assert stats["trained_tokens"] == 55 and stats["trained_fraction"] == pytest.approx(0.1)
    assert stats["length"] == {"p50": 50, "p90": 90, "p99": 100, "max": 100, "min": 10}
    # best-fit decreasing: 100 | 90+10 | 80+20 | 70+30 | 60+40 | 50 -> 6 rows of 100
    assert stats["packed_rows"] == 6 and stats["packing_efficiency"] == pytest.approx(550 / 600)


def test_the_first_token_is_never_trained():
    stats = dataset_stats([example(4, 4)], max_length=8)
    assert stats["trained_tokens"] == 3  # labels after the causal shift, as the loss counts them


def test_percentile_is_nearest_rank():
    values = list(range(1, 201))
    assert [percentile(values, p) for p in (50, 90, 99)] == [100, 180, 198]
    assert percentile([7], 99) == 7 and percentile([], 50) == 0


def test_packed_bins_best_fit_decreasing():
    assert packed_bins([60, 50, 40, 30, 20], 100) == 2  # 60+40, 50+30+20
    assert packed_bins([51, 51, 51], 100) == 3
    assert packed_bins([], 100) == 0
    assert packed_bins([25] * 8, 100) == 2


def chat(user: str, reply: str = "ok") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


@only("llama2")
def test_stats_count_cut_text_typed_special_tokens_and_warn_of_the_template(
    shared_tokenizer_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rows = [chat("Hi"), chat("Say </s>"), chat("word " * 5000), chat("</s><s>", "<unk>"), chat("Bye")]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = Recipe.model_validate(
        {
            "model": {"path": str(shared_tokenizer_dir), "chat_template": "chatml"},
            "data": {"train": [{"path": str(path)}], "max_length": 64, "cache": False},
            "output": str(tmp_path / "out"),
        }
    )
    table, figures = io.StringIO(), io.StringIO()
    run_stats(recipe, stream=table)
    run_stats(recipe, as_json=True, stream=figures)
    lines = table.getvalue().splitlines()
    assert (
        "cut text          1 records (text past 32 characters per token of max_length, which no sample reaches)"
        in lines
    )
    assert (
        f"special tokens    2 records type special-token strings (</s> 2, <s> 1, <unk> 1; first at {path}:2): each "
        "becomes a control token (warning)"
    ) in lines
    assert any(
        line.startswith('template          warning: the chat template (built-in "chatml") ends') for line in lines
    )
    stats = json.loads(figures.getvalue())
    assert (stats["cut_records"], stats["special_records"], stats["special_at"]) == (1, 2, f"{path}:2")
    assert stats["special_strings"] == {"</s>": 2, "<s>": 1, "<unk>": 1}
    assert "'<|im_end|>', which is not a special token" in stats["template_warning"]


@only("qwen3")
def test_stats_say_nothing_of_clean_data(shared_tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path(tmp_path / "chat.jsonl")
    path.write_text(json.dumps(chat("Hi")) + "\n", encoding="utf-8")
    recipe = Recipe.model_validate(
        {"model": {"path": str(shared_tokenizer_dir)}, "data": {"train": [{"path": str(path)}]}, "output": "out"}
    )
    out = io.StringIO()
    run_stats(recipe, stream=out)
    assert not any(line.startswith(("cut text", "special tokens", "template")) for line in out.getvalue().splitlines())
