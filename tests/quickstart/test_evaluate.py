"""Scoring replies on held-out questions."""

from __future__ import annotations

from lmforge.infer.load import load_run
from lmforge.quickstart import evaluate, synth


def test_final_number():
    assert evaluate.final_number("7 times 6 is 42.") == "42"
    assert evaluate.final_number("no number") is None


def test_score_and_sample_chat_on_the_random_tiny_model(tiny_model_dir):
    loaded = load_run(tiny_model_dir)
    chat = synth.make_task(0, train_chats=1, docs=1).heldout_chats[0]
    questions = synth.questions([chat])[:2]
    score = evaluate.score(*loaded, questions)
    assert score.questions == 2 and score.exact == 0.0  # random weights do not answer
    lines = evaluate.sample_chat({"random": loaded}, chat[:3])
    speakers = [speaker for speaker, _ in lines]
    assert speakers == ["system", "user", "random", "expected"]
    assert lines[-1][1] == chat[2]["content"]
