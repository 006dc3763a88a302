"""Scoring replies on held-out questions through `lmforge eval`'s generation task."""

from __future__ import annotations

import json

import yaml

from lmforge.infer.load import load_run
from lmforge.quickstart import evaluate, synth


def test_heldout_task_file_and_scores_on_the_random_tiny_model(tiny_model_dir, tmp_path):
    loaded = load_run(tiny_model_dir)
    chat = synth.make_task(0, train_chats=1, docs=1).heldout_chats[0]
    questions = synth.questions([chat])[:2]
    task = evaluate.write_heldout_task(questions, tmp_path / "eval")
    assert yaml.safe_load(task.read_text())["scorers"] == ["exact", "final_number"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "heldout.jsonl").read_text().splitlines()]
    assert [(r["messages"], r["reference"]) for r in rows] == questions
    scores = evaluate.score_runs({"random": loaded}, task)
    assert scores["random"]["exact"] == 0.0  # random weights do not answer
    assert set(scores["random"]) == {"exact", "final_number"}
    lines = evaluate.sample_chat({"random": loaded}, chat[:3])
    speakers = [speaker for speaker, _ in lines]
    assert speakers == ["system", "user", "random", "expected"]
    assert lines[-1][1] == chat[2]["content"]
