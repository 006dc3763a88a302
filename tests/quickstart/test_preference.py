"""The quickstart's preference data: the correct reply preferred over the same sentence with a wrong number."""

from __future__ import annotations

import random
import re

from lmforge.quickstart import synth
from lmforge.quickstart.preference import preference_pairs, wrong_reply


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
