"""The synthetic task: deterministic, held-out conversations disjoint from the fine-tuning chats."""

from __future__ import annotations

import json
import re

from lmforge.data.chat.masks import WHOLE, encode
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import Conversation, Message
from lmforge.quickstart import synth

QUESTION = re.compile(r"(\d+) (times|divided by|plus|minus) (\d+)")


def test_same_seed_same_task_other_seed_other_task():
    a, b = synth.make_task(0, train_chats=200, docs=50), synth.make_task(0, train_chats=200, docs=50)
    assert a == b
    c = synth.make_task(1, train_chats=200, docs=50)
    assert c.train_chats != a.train_chats and c.heldout_chats != a.heldout_chats


def test_heldout_conversations_are_not_in_the_training_chats():
    task = synth.make_task(0)
    train = {json.dumps(chat) for chat in task.train_chats}
    assert len(task.heldout_chats) == synth.HELD_OUT_CHATS
    assert not any(json.dumps(chat) in train for chat in task.heldout_chats)
    assert len({json.dumps(chat) for chat in task.heldout_chats}) == len(task.heldout_chats)


def test_replies_are_true_statements_and_the_corpus_states_every_fact():
    task = synth.make_task(0, train_chats=100, docs=400)
    for messages, expected in synth.questions(task.train_chats + task.heldout_chats):
        a, op, b = QUESTION.search(messages[-1]["content"]).groups()
        assert expected == synth.statement(int(a), op, int(b))
        assert expected in " ".join(task.texts).replace("\n", " ")
    assert synth.statement(7, "times", 6) == "7 times 6 is 42."
    assert synth.statement(42, "divided by", 7) == "42 divided by 7 is 6."


def test_corpus_is_plain_text():
    texts = synth.make_task(0, train_chats=10, docs=20).texts
    assert all("<|" not in t and "assistant" not in t for t in texts)


def test_write_task_writes_jsonl_the_readers_accept(tmp_path):
    task = synth.make_task(0, train_chats=20, docs=10)
    files = synth.write_task(task, tmp_path)
    first = json.loads(files["pt"].read_text().splitlines()[0])
    assert set(first) == {"text"}
    assert synth.read_chats(files["sft"]) == task.train_chats
    assert synth.read_chats(files["heldout"]) == task.heldout_chats


def test_chats_encode_with_the_tiny_tokenizer_template(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    for chat in synth.make_task(0, train_chats=20, docs=10).train_chats:
        conv = Conversation([Message(**m) for m in chat])
        encoded = encode(tokenizer, tokenizer.chat_template, conv, WHOLE)[0]  # cross-checks {% generation %}
        trained = tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])
        assert trained == "".join(m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant")
