"""Loss and perplexity over exactly the tokens training labels: golden values computed by hand on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.data.chat.masks import encode
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import Conversation, Message
from lmforge.evaluate.perplexity import build_sequences, evaluate_perplexity
from lmforge.evaluate.tasks import build_spec
from lmforge.infer.load import load_run

CHATS = [
    [("system", "You are a calculator."), ("user", "What is 7 times 6?"), ("assistant", "7 times 6 is 42.")],
    [
        ("user", "What is 2 plus 3?"),
        ("assistant", "2 plus 3 is 5."),
        ("user", "And 5 minus 3?"),
        ("assistant", "5 minus 3 is 2."),
    ],
]
TEXTS = ["7 times 6 is 42. 6 times 7 is 42.", "2 plus 3 is 5."]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_run(tiny_model_dir, device="cpu", dtype="fp32")


def hand_nll(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """-log p of each labelled token given the ones before it, one position at a time."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total, count = 0.0, 0
    for t in range(1, len(ids)):
        if labels[t] != IGNORE_INDEX:
            total -= torch.log_softmax(logits[t - 1], dim=-1)[labels[t]].item()
            count += 1
    return total, count


def spec_for(path, **options):
    return build_spec({"type": "perplexity", "name": "ppl", "data": path.name, **options}, path.parent, "test")


def test_chat_loss_is_the_cross_entropy_over_the_labels_encode_gives(loaded, tmp_path):
    model, tokenizer, template = loaded
    path = tmp_path / "chat.jsonl"
    path.write_text(
        "".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) + "\n" for chat in CHATS)
    )
    total = count = 0
    for chat in CHATS:
        for sample in encode(tokenizer, template, Conversation([Message(r, c) for r, c in chat])):
            nll, n = hand_nll(model, sample.input_ids, sample.labels)
            total, count = total + nll, count + n
    result = evaluate_perplexity(model, tokenizer, template, spec_for(path), batch_size=2)
    assert result["counts"]["tokens"] == count and count > 0
    assert result["metrics"]["loss"] == pytest.approx(total / count, abs=1e-5)
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # the system and user turns carry no loss: fewer tokens than the whole text
    seqs = build_sequences(tokenizer, template, spec_for(path))
    assert count < sum(len(ids) - 1 for ids, _ in seqs.rows)


def test_last_assistant_scores_only_the_last_reply(loaded, tmp_path):
    model, tokenizer, template = loaded
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": r, "content": c} for r, c in CHATS[1]]}) + "\n")
    every = evaluate_perplexity(model, tokenizer, template, spec_for(path), batch_size=1)
    last = evaluate_perplexity(model, tokenizer, template, spec_for(path, train_on="last_assistant"), batch_size=1)
    assert 0 < last["counts"]["tokens"] < every["counts"]["tokens"]


def test_text_rows_score_every_token_in_windows(loaded, tmp_path):
    model, tokenizer, template = loaded
    path = tmp_path / "text.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    total = count = 0
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for k in range(0, len(ids), 8):
            nll, n = hand_nll(model, ids[k : k + 8], ids[k : k + 8])
            total, count = total + nll, count + n
    result = evaluate_perplexity(model, tokenizer, template, spec_for(path, max_length=8), batch_size=3)
    assert result["settings"]["kind"] == "text"
    assert result["counts"]["tokens"] == count
    assert result["metrics"]["loss"] == pytest.approx(total / count, abs=1e-5)
