from __future__ import annotations

import numpy as np
import pytest

from lmforge.data import preprocess
from lmforge.data.preprocess import EncodeSettings, encode_records
from lmforge.data.records import Conversation, Message, Text
from lmforge.data.templates import resolve_chat_template
from shared_assets import load, only


def conversation(k: int) -> Conversation:
    messages = [Message("system", "You are terse.")] if k % 3 else []
    for t in range(1 + k % 4):
        messages += [Message("user", f"Question {k}.{t} " + "word " * (k % 11)),
                     Message("assistant", f"Answer {k}.{t} " + "yes " * (k % 7))]
    return Conversation(messages, source=f"data.jsonl:{k + 1}")


def flat(chunks) -> tuple:
    cat = np.concatenate
    return (cat([c.input_ids for c in chunks]).tolist(), cat([c.labels for c in chunks]).tolist(),
            cat([c.lengths for c in chunks]).tolist(), sum(c.cut_history for c in chunks),
            sum(c.cut_end for c in chunks), sum(sum(c.reasons.values()) for c in chunks))


@only("qwen3")
def test_parallel_gives_the_serial_result(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    records = [conversation(k) for k in range(120)]
    settings = EncodeSettings("sft", resolve_chat_template(tok, None), max_length=48)
    monkeypatch.setattr(preprocess, "PARALLEL_MIN_RECORDS", 16)  # parallel for this small input
    serial = encode_records(tok, records, settings, workers=1)
    parallel = encode_records(tok, records, settings, workers=3)
    assert len(parallel) > 1  # several chunks went through the pool
    assert flat(parallel) == flat(serial)
    figures = flat(serial)
    assert figures[3] > 0 and figures[4] >= 0  # the truncation policy ran in the workers too


@only("qwen3")
def test_small_inputs_stay_in_process(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    monkeypatch.setattr(preprocess.multiprocessing, "get_context", lambda *_: pytest.fail("forked"))
    chunks = encode_records(tok, [conversation(k) for k in range(10)],
                            EncodeSettings("sft", resolve_chat_template(tok, None), 256), workers=4)
    assert sum(len(c.lengths) for c in chunks) == 10


@only("qwen3")
def test_pretraining_documents_in_parallel(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    texts = [Text(f"Document {k}: " + "more " * (k % 9)) for k in range(100)]
    monkeypatch.setattr(preprocess, "PARALLEL_MIN_RECORDS", 16)
    settings = EncodeSettings("pt", None, 64)
    parallel = encode_records(tok, texts, settings, workers=2)
    expected = [tok(t.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    ids = np.concatenate([c.input_ids for c in parallel]).tolist()
    assert ids == [t for doc in expected for t in doc]
    assert np.concatenate([c.lengths for c in parallel]).tolist() == [len(d) for d in expected]


def test_default_workers():
    assert preprocess.default_workers(3) == 3
    assert 1 <= preprocess.default_workers(None) <= preprocess.MAX_WORKERS
