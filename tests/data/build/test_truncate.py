"""The one truncation policy on its own: a fake encoder whose length is the characters of its messages."""

from lmforge.data.build.truncate import fit, history_turns
from lmforge.data.chat.masks import Encoded
from lmforge.data.records import Message


def conversation(*turns: str) -> list[Message]:
    """A system message, then a user message and a reply for each turn text."""
    out = [Message("system", "s")]
    for text in turns:
        out += [Message("user", text), Message("assistant", "r")]
    return out


def encoded(messages: list[Message]) -> list[Encoded]:
    """One side: a token per character of every message, the last message's tokens labelled."""
    ids = [ord(c) for m in messages for c in m.content]
    n = len(messages[-1].content)
    return [Encoded(ids, [-100] * (len(ids) - n) + ids[len(ids) - n :], "")]


def test_turns_open_with_a_user_message_after_the_system_ones():
    head, groups = history_turns(conversation("a", "b"))
    assert [m.role for m in head] == ["system"] and [[m.content for m in g] for g in groups] == [["a", "r"], ["b", "r"]]
    assert history_turns([Message("assistant", "x"), Message("user", "y")]) is None


def test_a_sample_that_fits_is_kept_and_drop_drops():
    messages = conversation("aaaa")
    assert fit(encoded(messages), messages, encoded, 10, "cut").cut is None
    dropped = fit(encoded(messages), messages, encoded, 5, "drop")
    assert dropped.dropped == "longer than max_length 5 (truncation: drop)" and dropped.cut is None


def test_the_fewest_oldest_turns_are_dropped():
    messages = conversation("a" * 10, "b" * 10, "c" * 10, "dd")  # 1 + 11 + 11 + 11 + 3 characters
    calls = []

    def counting(shorter: list[Message]) -> list[Encoded]:
        calls.append(len(shorter))
        return encoded(shorter)

    fitted = fit(encoded(messages), messages, counting, 16, "cut")
    assert fitted.cut == "history" and "".join(chr(t) for t in fitted.sides[0].input_ids) == "s" + "c" * 10 + "rddr"
    assert len(calls) <= 2  # a binary search over the 3 ways of dropping turns


def test_when_the_last_turn_alone_is_too_long_its_end_is_cut():
    messages = conversation("a" * 10, "b" * 30)
    fitted = fit(encoded(messages), messages, encoded, 8, "cut")
    assert fitted.cut == "end" and len(fitted.sides[0].input_ids) == 8
    assert "".join(chr(t) for t in fitted.uncut[0].input_ids) == "s" + "b" * 30 + "r"  # the last turn alone


def test_a_refused_shortening_cuts_the_end_of_the_whole():
    messages = conversation("a" * 10, "b" * 10)
    fitted = fit(encoded(messages), messages, lambda shorter: None, 8, "cut")
    assert fitted.cut == "end" and fitted.uncut == encoded(messages)
    assert fit(encoded(messages), None, encoded, 8, "cut").uncut == encoded(messages)  # no history to shorten
