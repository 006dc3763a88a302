"""The data tools through the `lmforge` command, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from shared_assets import only

LMFORGE = [sys.executable, "-m", "lmforge.cli"]


def lmforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMFORGE_CACHE": str(cwd / "cache")}
    return subprocess.run([*LMFORGE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


ALPACA = [{"instruction": f"Add {k} and {k + 1}", "input": "", "output": f"{2 * k + 1}"} for k in range(8)]
ALPACA.append({"instruction": "Repeat", "input": "", "output": " ".join(["again"] * 80)})  # longer than max_length


@only("qwen3")
def test_convert_validate_split_then_stats(shared_tokenizer_dir, tmp_path):
    (tmp_path / "alpaca.json").write_text(json.dumps(ALPACA), encoding="utf-8")
    done = lmforge("data", "convert", "alpaca.json", "chat.jsonl", "--to", "messages", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 9 conversation records to chat.jsonl" in done.stderr
    first = json.loads((tmp_path / "chat.jsonl").read_text().splitlines()[0])
    assert first == {"messages": [{"role": "user", "content": "Add 0 and 1"}, {"role": "assistant", "content": "1"}]}

    valid = lmforge("data", "validate", "chat.jsonl", cwd=tmp_path)
    assert valid.returncode == 0 and "all 9 records are valid" in valid.stdout

    split = lmforge(
        "data", "split", "chat.jsonl", "--eval-fraction", "0.2", "--seed", "3", "--out", "parts", cwd=tmp_path
    )
    assert split.returncode == 0, split.stderr
    lines = {n: (tmp_path / "parts" / f"{n}.jsonl").read_text().splitlines() for n in ("train", "eval")}
    assert (len(lines["train"]), len(lines["eval"])) == (7, 2)
    assert sorted(lines["train"] + lines["eval"]) == sorted((tmp_path / "chat.jsonl").read_text().splitlines())

    recipe = {
        "model": {"path": str(shared_tokenizer_dir)},
        "output": "run",
        "data": {"train": [{"path": "chat.jsonl"}], "max_length": 24, "truncation": "drop"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    stats = lmforge("data", "stats", "r.yaml", "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["samples"], figures["records"], figures["dropped"], figures["truncated"]) == (8, 9, 1, 0)
    assert figures["dropped_reasons"] == {"longer than max_length 24 (truncation: drop)": 1}
    assert figures["length"]["max"] <= 24 and 0 < figures["trained_fraction"] < 1
    assert figures["cache"] == "miss" and "1 dropped" in stats.stderr
    table = lmforge("data", "stats", "r.yaml", "data.truncation=cut", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "truncated         1 (data.truncation: cut)" in table.stdout and "packing estimate" in table.stdout
    again = lmforge("data", "stats", "r.yaml", "--json", cwd=tmp_path)
    assert json.loads(again.stdout) | {"cache": "miss"} == figures and "cache hit" in again.stderr


def test_validate_exits_1_and_lists_every_problem(tmp_path):
    rows = [
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
        '{"messages": [oops',
        '{"text": 3}',
    ]
    (tmp_path / "bad.jsonl").write_bytes("\n".join(rows).encode() + b"\n\xff\xfe\n")
    out = lmforge("data", "validate", "bad.jsonl", cwd=tmp_path)
    assert out.returncode == 1
    assert [line.split(": ")[0] for line in out.stdout.splitlines()[:3]] == [
        "bad.jsonl:2",
        "bad.jsonl:3",
        "bad.jsonl:4",
    ]
    assert "not valid UTF-8" in out.stdout and "3 of 4 records have problems" in out.stdout
    help_text = lmforge("data", "--help", cwd=tmp_path).stdout
    assert all(verb in help_text for verb in ("inspect", "stats", "convert", "validate", "split"))


def test_inspect_and_stats_on_a_dpo_and_a_kto_recipe(tiny_tokenizer_dir, tmp_path):
    pairs = [
        {"prompt": f"What is {k} plus 1?", "chosen": f"{k} plus 1 is {k + 1}.", "rejected": f"{k} plus 1 is 9."}
        for k in range(4)
    ]
    pairs[2]["rejected"] = pairs[2]["chosen"]  # a bad pair: skipped and counted under data.on_error: skip
    kto = [
        {"prompt": f"What is {k} plus 1?", "completion": f"{k} plus 1 is {k + 1 + k % 2}.", "label": k % 2 == 0}
        for k in range(4)
    ]
    for name, rows, stage in (("pairs", pairs, "dpo"), ("kto", kto, "kto")):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = {
            "stage": stage,
            "model": {"path": str(tiny_tokenizer_dir)},
            "output": f"run-{stage}",
            "data": {"train": [{"path": f"{name}.jsonl"}], "max_length": 64, "on_error": "skip"},
        }
        (tmp_path / f"{stage}.yaml").write_text(yaml.safe_dump(recipe))

    shown = lmforge("data", "inspect", "dpo.yaml", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    samples = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [s["index"] for s in samples] == [0, 1, 3] and "left out 1 bad records" in shown.stderr
    assert all(s["chosen"]["labels"][s["prompt_length"]] != -100 for s in samples)

    strict = lmforge("data", "inspect", "dpo.yaml", "--json", "data.on_error=strict", cwd=tmp_path)
    assert strict.returncode == 2 and "pairs.jsonl:3: the chosen and rejected" in strict.stderr  # override after option
    stray = lmforge("data", "inspect", "dpo.yaml", "-n", "1", "stray", cwd=tmp_path)
    assert stray.returncode == 2 and "unrecognized arguments: stray" in stray.stderr

    viewed = lmforge("data", "inspect", "kto.yaml", "-n", "2", "--html", "kto.html", cwd=tmp_path)
    assert viewed.returncode == 0, viewed.stderr
    assert viewed.stdout.count("── example ") == 2 and "⟦0 plus 1 is 1.<|im_end|>⟧" in viewed.stdout
    assert "completion (undesirable)" in (tmp_path / "kto.html").read_text(encoding="utf-8")

    stats = lmforge("data", "stats", "dpo.yaml", "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert (figures["samples"], figures["rejected_reasons"]) == (3, {"chosen equals rejected": 1})
    assert set(figures["length"]) == {"prompt", "chosen", "rejected", "longest side"}
    table = lmforge("data", "stats", "kto.yaml", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "labels            2 desirable, 2 undesirable" in table.stdout and "  completion" in table.stdout
