"""`lmforge eval` as a user runs it: every local task kind on a tiny model in one run, the lm-eval bridge on a
local task (no hub), and the errors a user gets before any model loads."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.data.chat.masks import generation_prompt
from lmforge.infer.chat import generate_replies
from lmforge.infer.load import load_run
from lmforge.train.rundir import TEMPLATE_FILE

from cli_runs import lmforge, write_chat, write_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"
QUESTIONS = [("What is 7 times 6?", "7 times 6 is 42."), ("What is 3 plus 4?", "3 plus 4 is 7.")]
# A template other than the tiny tokenizer's own, so a prompt shows which of the two formatted it.
RUN_TEMPLATE = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + ' says\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant says\\n' }}{%- endif -%}"
)


def test_eval_runs_each_local_task_kind_and_reports_them(tiny_model_dir, tmp_path):
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"prompt": q, "reference": r}) + "\n" for q, r in QUESTIONS))
    (tmp_path / "scores.py").write_text("def length_ratio(reply, reference):\n    return min(len(reply), 9) / 9\n")
    (tmp_path / "gen.yaml").write_text(
        "type: generate\ndata: q.jsonl\nmax_new_tokens: 6\n"
        "scorers: [exact, final_number, {regex: 'is (\\d+)', name: answer}, scores.py:length_ratio]\n"
    )
    write_chat(tmp_path / "chat.jsonl", n=4)
    write_text(tmp_path / "text.jsonl", n=4)
    done = lmforge(
        "eval",
        str(tiny_model_dir),
        "--tasks",
        "perplexity:chat.jsonl",
        "perplexity:text.jsonl",
        "gen.yaml",
        str(EXAMPLES / "arithmetic_choice.yaml"),
        "--out",
        "out/report.json",
        "--samples",
        "--limit",
        "3",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    tasks = report["tasks"]
    assert list(tasks) == ["perplexity:chat", "perplexity:text", "gen", "arithmetic_choice"]
    assert all(name in done.stdout for name in tasks) and "perplexity" in done.stdout  # the table
    model, tokenizer, template = load_run(tiny_model_dir, device="cpu")
    assert report["template"]["sha256"] == hashlib.sha256(template.encode()).hexdigest()
    assert report["model"] == str(tiny_model_dir) and report["limit"] == 3

    chat, text = tasks["perplexity:chat"], tasks["perplexity:text"]
    assert chat["counts"]["records"] == 3 and text["counts"]["records"] == 3  # --limit
    assert chat["settings"]["kind"] == "conversation" and text["settings"]["kind"] == "text"
    assert chat["metrics"]["perplexity"] == pytest.approx(2.718281828 ** chat["metrics"]["loss"], rel=1e-4)

    gen = tasks["gen"]
    replies = generate_replies(model, tokenizer, template, [[{"role": "user", "content": q}] for q, _ in QUESTIONS], 6)
    assert [s["reply"] for s in gen["samples"]] == replies  # greedy, through the run's template
    exact = sum(r.strip() == ref for r, (_, ref) in zip(replies, QUESTIONS)) / len(QUESTIONS)
    assert gen["metrics"]["exact"] == exact
    assert gen["metrics"]["length_ratio"] == pytest.approx(sum(min(len(r), 9) / 9 for r in replies) / 2, abs=1e-6)
    assert set(gen["metrics"]) == {"exact", "final_number", "answer", "length_ratio"}

    choice = tasks["arithmetic_choice"]
    assert choice["counts"] == {"questions": 3, "choices": 12}
    assert len(choice["samples"]) == 3 and set(choice["metrics"]) == {"accuracy", "accuracy_norm"}


def test_lm_eval_on_a_local_task_through_the_runs_template(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run)
    (run / TEMPLATE_FILE).write_text(RUN_TEMPLATE)
    local = tmp_path / "lm_tasks"
    local.mkdir()
    rows = [{"question": q, "choices": [r, r.replace("is", "is not")], "answer": 0} for q, r in QUESTIONS]
    (local / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (local / "arith.yaml").write_text(
        "task: lmforge_tiny_arith\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {local / 'arith.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (tmp_path / "harness.yaml").write_text(
        "type: lm-eval\ntask: lmforge_tiny_arith\ninclude_path: lm_tasks\nchat: true\n"
    )
    done = lmforge("eval", str(run), "--tasks", "harness.yaml", "--out", "r.json", "--samples", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())["tasks"]["harness"]
    assert 0.0 <= result["metrics"]["acc"] <= 1.0 and result["counts"]["samples"] == 2
    _, tokenizer, _ = load_run(tiny_model_dir, device="cpu")
    expected = [generation_prompt(tokenizer, RUN_TEMPLATE, [{"role": "user", "content": q}]) for q, _ in QUESTIONS]
    assert [s["context"] for s in result["samples"]] == expected  # the run's template, not the tokenizer's


@pytest.mark.parametrize(
    "tasks, message",
    [
        (["blue:x.jsonl"], "lmforge: --tasks blue:x.jsonl: unknown task type 'blue'; expected one of perplexity"),
        (["generate:none.jsonl"], "data file"),
        (["t.yaml"], "t.yaml: key 'scorer' is not read by a generate task"),
    ],
)
def test_bad_tasks_stop_before_the_model_loads(tmp_path, monkeypatch, capsys, tasks, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.jsonl").write_text('{"prompt": "hi", "reference": "hello"}\n')
    (tmp_path / "t.yaml").write_text("type: generate\ndata: q.jsonl\nscorer: [exact]\n")
    assert main(["eval", str(tmp_path / "no-model"), "--tasks", *tasks]) == 2
    assert message in capsys.readouterr().err


def test_lm_eval_missing_is_said_with_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if it were not installed
    assert main(["eval", str(tmp_path), "--tasks", "lm-eval:arc_easy"]) == 2
    err = capsys.readouterr().err
    assert "--tasks lm-eval:arc_easy: lm-eval tasks need lm-evaluation-harness" in err and "lmforge[eval]" in err


def test_help_shows_the_task_forms(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    shown = capsys.readouterr().out
    for form in ("perplexity:DATA.jsonl", "generate:DATA.jsonl", "choice:DATA.jsonl", "lm-eval:TASKNAME", "judge"):
        assert form in shown
