"""`lmforge data inspect` and `data stats` on preference stages: pairs and KTO examples as training sees them."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.commands.inspect import CLOSE_MARK, OPEN_MARK, run_inspect
from lmforge.commands.stats import preference_stats, run_stats
from lmforge.config.recipe import Recipe
from lmforge.data.examples import IGNORE_INDEX
from lmforge.errors import LmforgeError

from shared_assets import SHARED, skip_if_mask_check_inapplicable

MASK_CHECK = SHARED / "check" / "mask_check.py"
SFT_FIELDS = {"index", "source", "text", "input_ids", "labels", "truncated", "dropped"}


def pair_rows(n: int = 4) -> list[dict]:
    system = {"role": "system", "content": "Be exact."}
    return [
        {
            "prompt": [system, {"role": "user", "content": f"What is {i} plus 1?"}],
            "chosen": f"{i} plus 1 is {i + 1}.",
            "rejected": f"{i} plus 1 is {i + 2}, I think.",
        }
        for i in range(n)
    ]


def kto_rows(n: int = 4) -> list[dict]:
    return [
        {"prompt": f"What is {i} plus 1?", "completion": f"{i} plus 1 is {i + 1 + i % 2}.", "label": i % 2 == 0}
        for i in range(n)
    ]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def recipe(tok_dir: Path, data: Path, stage: str = "dpo", **data_keys) -> Recipe:
    template = "llama2" if tok_dir.name == "llama2" else None  # the base-model tokenizer has no template
    return Recipe(
        stage=stage,
        model={"path": str(tok_dir), "chat_template": template},
        output=str(data.parent / "out"),
        data={"train": [{"path": str(data)}], "max_length": 64, "cache_dir": str(data.parent / "cache"), **data_keys},
    )


def inspect_json(r: Recipe, n: int | None = None) -> list[dict]:
    out = io.StringIO()
    run_inspect(r, n=n, as_json=True, html_path=None, stream=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def labelled(ids: list[int], labels: list[int]) -> list[int]:
    return [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


# ---------------------------------------------------------------- inspect


def test_pair_json_has_both_sides_as_sft_samples_sharing_the_prompt(tmp_path, tiny_tokenizer_dir, tokenizer):
    rows = pair_rows()
    samples = inspect_json(recipe(tiny_tokenizer_dir, write(tmp_path / "p.jsonl", rows)))
    assert [s["index"] for s in samples] == [0, 1, 2, 3] and samples[1]["source"].endswith("p.jsonl:2")
    for sample, row in zip(samples, rows):
        assert set(sample) == {"index", "source", "prompt_length", "truncated", "dropped", "chosen", "rejected"}
        n = sample["prompt_length"]
        chosen, rejected = sample["chosen"], sample["rejected"]
        assert set(chosen) == set(rejected) == SFT_FIELDS
        assert chosen["input_ids"][:n] == rejected["input_ids"][:n] and n > 0
        for side in (chosen, rejected):
            assert side["labels"][:n] == [IGNORE_INDEX] * n and side["labels"][n] == side["input_ids"][n]
            assert side["text"].count("Be exact.") == 1
        for name in ("chosen", "rejected"):
            text = tokenizer.decode(labelled(sample[name]["input_ids"], sample[name]["labels"]))
            assert text == row[name] + "<|im_end|>"


def test_kto_json_is_an_sft_sample_with_its_label(tmp_path, tiny_tokenizer_dir, tokenizer):
    rows = kto_rows()
    samples = inspect_json(recipe(tiny_tokenizer_dir, write(tmp_path / "k.jsonl", rows), stage="kto"), n=3)
    assert len(samples) == 3
    for sample, row in zip(samples, rows):
        assert set(sample) == SFT_FIELDS | {"desirable", "prompt_length"}
        assert sample["desirable"] is row["label"]
        first = next(k for k, label in enumerate(sample["labels"]) if label != IGNORE_INDEX)
        assert first == sample["prompt_length"]
        assert tokenizer.decode(labelled(sample["input_ids"], sample["labels"])) == row["completion"] + "<|im_end|>"


@pytest.mark.parametrize("stage", ["rm", "simpo", "orpo"])
def test_every_pair_stage_is_inspected_as_pairs(tmp_path, tiny_tokenizer_dir, stage):
    (sample,) = inspect_json(recipe(tiny_tokenizer_dir, write(tmp_path / "p.jsonl", pair_rows()), stage=stage), n=1)
    assert {"chosen", "rejected"} <= set(sample)


def test_truncated_and_dropped_pairs_are_marked(tmp_path, tiny_tokenizer_dir):
    rows = pair_rows(2)
    rows[0]["prompt"] = [
        {"role": "user", "content": "What is 9 times 9? " * 4},
        {"role": "assistant", "content": "81. " * 8},
        {"role": "user", "content": "And 1 plus 1?"},
    ]
    data = write(tmp_path / "p.jsonl", rows)
    cut = inspect_json(recipe(tiny_tokenizer_dir, data, max_length=48))
    assert (cut[0]["truncated"], cut[0]["dropped"], cut[1]["truncated"]) == (True, None, False)
    assert "9 times 9" not in cut[0]["chosen"]["text"] and cut[0]["chosen"]["truncated"]
    dropped = inspect_json(recipe(tiny_tokenizer_dir, data, max_length=48, truncation="drop"))
    assert dropped[0]["dropped"] == "longer than max_length 48 (truncation: drop)"
    assert dropped[0]["rejected"]["dropped"] == dropped[0]["dropped"] and dropped[1]["dropped"] is None


def test_terminal_view_shows_the_prompt_once_and_both_replies_marked(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = pair_rows(2)
    out = io.StringIO()
    run_inspect(
        recipe(tiny_tokenizer_dir, write(tmp_path / "p.jsonl", rows)), n=None, as_json=False, html_path=None, stream=out
    )
    text = out.getvalue()
    assert text.count("── pair ") == 2 and text.count("What is 0 plus 1?") == 1
    for name in ("chosen", "rejected"):
        assert f"{OPEN_MARK}{rows[0][name]}<|im_end|>{CLOSE_MARK}" in text
        assert text.count(f"▸ {name} · ") == 2
    assert "\x1b[" not in text
    page = (tmp_path / "lmforge-inspect.html").read_text(encoding="utf-8")
    assert f'<mark class="trained">{rows[1]["rejected"]}&lt;|im_end|&gt;</mark>' in page
    assert "2 pairs; chosen: " in page and page.count('<div class="sides">') == 2


def test_kto_terminal_view_and_html_name_the_label(tmp_path, tiny_tokenizer_dir):
    out, page = io.StringIO(), tmp_path / "view" / "k.html"
    run_inspect(
        recipe(tiny_tokenizer_dir, write(tmp_path / "k.jsonl", kto_rows()), stage="kto"),
        n=2,
        as_json=False,
        html_path=page,
        stream=out,
    )
    text = out.getvalue()
    assert text.count("── example ") == 2
    assert "▸ completion (desirable) · " in text and "▸ completion (undesirable) · " in text
    assert f"{OPEN_MARK}1 plus 1 is 3.<|im_end|>{CLOSE_MARK}" in text
    assert "2 examples; completion: " in page.read_text(encoding="utf-8")


def test_bad_pairs_stop_a_strict_inspect_and_are_left_out_when_skipped(tmp_path, tiny_tokenizer_dir, capsys):
    rows = pair_rows()
    rows[1]["rejected"] = rows[1]["chosen"]
    data = write(tmp_path / "p.jsonl", rows)
    with pytest.raises(
        LmforgeError,
        match=r"p.jsonl:2: the chosen and rejected replies are the same.*"
        r"data.on_error: skip",
    ):
        inspect_json(recipe(tiny_tokenizer_dir, data))
    samples = inspect_json(recipe(tiny_tokenizer_dir, data, on_error="skip"), n=2)
    assert [s["index"] for s in samples] == [0, 2]
    assert "left out 1 bad records (data.on_error: skip): 1 chosen equals rejected" in capsys.readouterr().err


def _mask_check(tok_dir: Path, rows: list[dict], samples: list[dict], side: str, tmp_path: Path) -> str:
    convs = [{"messages": [*r["prompt"], {"role": "assistant", "content": r[side]}]} for r in rows]
    write(tmp_path / f"{side}.convs.jsonl", convs)
    write(tmp_path / f"{side}.inspect.jsonl", [s[side] for s in samples])
    done = subprocess.run(
        [
            sys.executable,
            str(MASK_CHECK),
            str(tok_dir),
            str(tmp_path / f"{side}.convs.jsonl"),
            str(tmp_path / f"{side}.inspect.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_both_sides_pass_the_mask_check_on_each_shared_tokenizer(shared_tokenizer_dir, tmp_path):
    skip_if_mask_check_inapplicable(shared_tokenizer_dir)
    rows = [
        {"prompt": [{"role": "user", "content": q}], "chosen": good, "rejected": bad}
        for q, good, bad in [
            ("Repeat: hello there", "hello there", "hello"),
            ("Unicode?", "Grüße — 東京 🚀 naïve «ok»", "Gruesse"),
            ("Code?", "```python\nprint('a < b')\n```", "print(1)"),
            ("Lines?", "line one\n\nline two", "line one"),
        ]
    ]
    samples = inspect_json(recipe(shared_tokenizer_dir, write(tmp_path / "p.jsonl", rows), max_length=256))
    for side in ("chosen", "rejected"):
        assert "masks ok: 4 samples, 4 turns" in _mask_check(shared_tokenizer_dir, rows, samples, side, tmp_path)


# ---------------------------------------------------------------- stats


def test_pair_stats_count_lengths_and_trained_tokens():
    prompt = [IGNORE_INDEX] * 3
    examples = [
        {
            "chosen_input_ids": [1, 2, 3, 4, 5],
            "chosen_labels": [*prompt, 4, 5],
            "rejected_input_ids": [1, 2, 3, 6],
            "rejected_labels": [*prompt, 6],
        },
        {
            "chosen_input_ids": [1, 2, 7],
            "chosen_labels": [IGNORE_INDEX, IGNORE_INDEX, 7],
            "rejected_input_ids": [1, 2, 8, 9, 9, 9],
            "rejected_labels": [IGNORE_INDEX, IGNORE_INDEX, 8, 9, 9, 9],
        },
    ]
    stats = preference_stats(examples, kto=False)
    assert (stats["samples"], stats["tokens"], stats["trained_tokens"]) == (2, 18, 8)
    length = stats["length"]
    assert (length["prompt"]["min"], length["prompt"]["max"]) == (2, 3)
    assert (length["chosen"]["min"], length["chosen"]["max"]) == (1, 2)
    assert (length["rejected"]["min"], length["rejected"]["max"]) == (1, 4)
    assert length["longest side"]["max"] == 6 and length["longest side"]["p50"] == 5


def test_kto_stats_count_labels(tmp_path, tiny_tokenizer_dir):
    out = io.StringIO()
    run_stats(
        recipe(tiny_tokenizer_dir, write(tmp_path / "k.jsonl", kto_rows(5)), stage="kto"), as_json=True, stream=out
    )
    stats = json.loads(out.getvalue())
    assert (stats["samples"], stats["desirable"], stats["undesirable"]) == (5, 3, 2)
    assert set(stats["length"]) == {"prompt", "completion", "sequence"}
    assert stats["length"]["completion"]["min"] == 8  # "k plus 1 is m." and <|im_end|> and the newline after it


def test_pair_stats_report_rejects_by_reason(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = pair_rows(6)
    rows[1]["rejected"] = rows[1]["chosen"]
    rows[3]["prompt"] = "word " * 300
    out = io.StringIO()
    run_stats(
        recipe(tiny_tokenizer_dir, write(tmp_path / "p.jsonl", rows), on_error="skip", eval={"fraction": 0.25}),
        stream=out,
    )
    table = out.getvalue()
    counts = re.search(r"^pairs +(\d+) \(from \1 records; (\d+) eval pairs\)$", table, re.M)
    assert counts and int(counts[1]) + int(counts[2]) == 4  # 6 records, 2 bad
    assert "rejected          2 (1 chosen equals rejected, 1 no room for the answers) -> lmforge-rejects.jsonl" in table
    assert "  chosen  " in table and "  rejected  " in table and "  longest side  " in table
    assert len((tmp_path / "lmforge-rejects.jsonl").read_text().splitlines()) == 2
