"""The quickstart's preference extension (`lmforge quickstart --preference`): the correct reply preferred over
the same sentence with a wrong number, figures by kind of rejected reply, and what it says without a quickstart."""

from __future__ import annotations

import random
import re

import pytest

from lmforge.quickstart import synth
from lmforge.quickstart.preference import preference_pairs, summary, wrong_reply

from cli_runs import lmforge


def test_wrong_reply_keeps_the_format_and_changes_the_number():
    rng = random.Random(0)
    for _ in range(20):
        wrong = wrong_reply("7 times 6 is 42.", rng)
        assert re.fullmatch(r"7 times 6 is -?\d+\.", wrong) and wrong != "7 times 6 is 42."


def test_one_pair_per_assistant_turn_with_the_gold_history():
    chats = synth.make_task(0, train_chats=5, docs=1, heldout=1).train_chats
    pairs = preference_pairs(chats)
    assert len(pairs) == sum(m["role"] == "assistant" for c in chats for m in c)
    for p in pairs:
        assert p["prompt"][-1]["role"] == "user" and p["chosen"] != p["rejected"]
        assert p["chosen"].rsplit(" is ", 1)[0] == p["rejected"].rsplit(" is ", 1)[0]
    assert preference_pairs(chats) == pairs  # seeded


def test_the_models_own_wrong_replies_become_the_rejected_ones():
    chats = synth.make_task(0, train_chats=3, docs=1, heldout=1).train_chats
    asked = synth.questions(chats)
    replies = [correct if i % 2 else "no idea." for i, (_, correct) in enumerate(asked)]
    replies[-1] = ""  # an empty reply is not a usable rejected one
    pairs = preference_pairs(chats, replies=replies)
    for i, (p, (_, correct)) in enumerate(zip(pairs, asked)):
        assert p["chosen"] == correct and p["rejected"] != correct
        own = i % 2 == 0 and i != len(asked) - 1
        assert p["model_mistake"] is own
        assert (p["rejected"] == "no idea.") is own


def test_a_reply_per_question_is_required():
    chats = synth.make_task(0, train_chats=2, docs=1, heldout=1).train_chats
    with pytest.raises(ValueError):
        preference_pairs(chats, replies=["x"])


def test_figures_are_given_overall_and_by_kind_of_rejected_reply():
    pairs = [{"model_mistake": own} for own in (True, True, False, False, False)]
    figures = summary(pairs, [1.0, -3.0, 2.0, 4.0, -0.5])
    assert figures["pairs"] == 5 and figures["accuracy"] == 0.6 and figures["mean_margin"] == 0.7
    assert figures["model_mistakes"] == {"pairs": 2, "accuracy": 0.5, "mean_margin": -1.0}
    assert figures["nearby_numbers"] == {"pairs": 3, "accuracy": 0.6667, "mean_margin": 1.8333}
    with pytest.raises(ValueError):
        summary(pairs, [1.0])


def test_without_a_finished_quickstart_it_says_what_to_run(tmp_path):
    out = lmforge("quickstart", "--preference", "--workdir", str(tmp_path / "qs"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"lmforge: {tmp_path / 'qs'} holds no finished quickstart" in out.stderr
    assert f"lmforge quickstart --workdir {tmp_path / 'qs'}" in out.stderr
    assert not (tmp_path / "qs").exists()  # nothing written
