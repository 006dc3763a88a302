from __future__ import annotations

import numpy as np
import pytest

from lmforge.data.build import workers
from lmforge.data.build.encode import EncodeSettings
from lmforge.data.build.workers import encode_records
from lmforge.data.chat.templates import resolve_chat_template
from lmforge.data.records import Conversation, Message, Text

from shared_assets import load, only


def conversation(k: int) -> Conversation:
    messages = [Message("system", "You are terse.")] if k % 3 else []
    for t in range(1 + k % 4):
        messages += [
            Message("user", f"Question {k}.{t} " + "word " * (k % 11)),
            Message("assistant", f"Answer {k}.{t} " + "yes " * (k % 7)),
        ]
    return Conversation(messages, source=f"data.jsonl:{k + 1}")


def flat(chunks) -> tuple:
    cat = np.concatenate
    parts = [c.parts[""] for c in chunks]
    return (
        cat([p.input_ids for p in parts]).tolist(),
        cat([p.labels for p in parts]).tolist(),
        cat([p.lengths for p in parts]).tolist(),
        sum(c.cut_history for c in chunks),
        sum(c.cut_end for c in chunks),
        sum(sum(c.reasons.values()) for c in chunks),
    )


@only("qwen3")
def test_parallel_gives_the_serial_result(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    records = [conversation(k) for k in range(120)]
    settings = EncodeSettings("conversation", resolve_chat_template(tok, None), max_length=48)
    monkeypatch.setattr(workers, "PARALLEL_MIN_RECORDS", 16)  # parallel for this small input
    serial = encode_records(tok, records, settings, workers=1)
    parallel = encode_records(tok, records, settings, workers=3)
    assert len(parallel) > 1  # several chunks went through the pool
    assert flat(parallel) == flat(serial)
    cut_history, cut_end, dropped = flat(serial)[3:]
    assert (cut_history, cut_end, dropped) == expected_cuts(tok, records, max_length=48)
    assert cut_history > 0 and cut_end > 0  # both truncation paths ran, in the workers too


def expected_cuts(tok, records: list[Conversation], max_length: int) -> tuple[int, int, int]:
    """(cut by dropping history, cut at the end, dropped) for the truncation policy in truncate.py's docstring,
    from transformers' own renders: a conversation longer than max_length keeps its system message and drops
    its oldest turns (user message and reply) until it fits; when its last turn alone is still too long, its
    end is cut, and it is dropped if the cut leaves no token of the reply (the reply follows the prompt)."""

    def length(messages: list[dict], prompt: bool = False) -> int:
        return len(tok.apply_chat_template(messages, add_generation_prompt=prompt)["input_ids"])

    history = end = dropped = 0
    for record in records:
        messages = record.as_dicts()
        if length(messages) <= max_length:
            continue
        head = [m for m in messages if m["role"] == "system"]
        turns = [messages[i : i + 2] for i in range(len(head), len(messages), 2)]  # (user, assistant) each
        if any(length(head + sum(turns[d:], [])) <= max_length for d in range(1, len(turns))):
            history += 1
        elif length(head + turns[-1][:1], prompt=True) < max_length:
            end += 1
        else:
            dropped += 1
    return history, end, dropped


@only("qwen3")
def test_small_inputs_stay_in_process(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    monkeypatch.setattr(workers.multiprocessing, "get_context", lambda *_: pytest.fail("forked"))
    chunks = encode_records(
        tok,
        [conversation(k) for k in range(10)],
        EncodeSettings("conversation", resolve_chat_template(tok, None), 256),
        workers=4,
    )
    assert sum(len(c.parts[""]) for c in chunks) == 10


@only("qwen3")
def test_pretraining_documents_in_parallel(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    texts = [Text(f"Document {k}: " + "more " * (k % 9)) for k in range(100)]
    monkeypatch.setattr(workers, "PARALLEL_MIN_RECORDS", 16)
    settings = EncodeSettings("text", None, 64)
    parallel = encode_records(tok, texts, settings, workers=2)
    expected = [tok(t.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    ids = np.concatenate([c.parts[""].input_ids for c in parallel]).tolist()
    assert ids == [t for doc in expected for t in doc]
    assert np.concatenate([c.parts[""].lengths for c in parallel]).tolist() == [len(d) for d in expected]


def test_default_workers():
    assert workers.default_workers(3) == 3
    assert 1 <= workers.default_workers(None) <= workers.MAX_WORKERS
