"""Multiple choice: each choice's log-likelihood as the reply after the generation prompt, the pick with and
without length normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.data.chat.masks import LAST_REPLY, encode, generation_prompt
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import Conversation, Message
from lmforge.evaluate.choice import choice_logps, evaluate_choice, pick
from lmforge.evaluate.rows import ChoiceRow
from lmforge.evaluate.tasks import parse_tasks
from lmforge.infer.load import load_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"


def test_pick_plain_and_per_byte():
    choices = ["ab", "abcdefgh"]
    assert pick([-4.0, -6.0], choices, normalise=False) == 0
    assert pick([-4.0, -6.0], choices, normalise=True) == 1  # -2 a byte against -0.75
    assert pick([-1.0, -1.0], ["a", "b"], normalise=False) == 0  # a tie goes to the first


def test_choice_logp_is_the_reply_after_the_generation_prompt(tiny_model_dir):
    model, tokenizer, template = load_run(tiny_model_dir, device="cpu", dtype="fp32")
    messages = [{"role": "user", "content": "What is 7 times 6?"}]
    row = ChoiceRow("q.jsonl:1", messages, ["7 times 6 is 42.", "43"], 0)
    got = choice_logps(model, tokenizer, template, [row], batch_size=2)[0]
    prompt = tokenizer(generation_prompt(tokenizer, template, messages), add_special_tokens=False)["input_ids"]
    for choice, value in zip(row.choices, got):
        conv = Conversation([Message("user", messages[0]["content"]), Message("assistant", choice)])
        (sample,) = encode(tokenizer, template, conv, LAST_REPLY)
        scored = [t for t, label in enumerate(sample.labels) if label != IGNORE_INDEX]
        assert sample.input_ids[: scored[0]] == prompt  # scored from right after the generation prompt
        assert tokenizer.decode([sample.input_ids[t] for t in scored]).startswith(choice)
        assert sample.input_ids[scored[-1]] in tokenizer.all_special_ids  # and the turn's end
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=torch.tensor([sample.input_ids])).logits[0].double(), dim=-1)
        assert value == pytest.approx(sum(logps[t - 1, sample.input_ids[t]].item() for t in scored), abs=1e-4)


def test_the_shipped_example_task_runs(tiny_model_dir):
    model, tokenizer, template = load_run(tiny_model_dir, device="cpu", dtype="fp32")
    (spec,) = parse_tasks([str(EXAMPLES / "arithmetic_choice.yaml")])
    result = evaluate_choice(model, tokenizer, template, spec, batch_size=8, keep_samples=True)
    assert result["counts"] == {"questions": 6, "choices": 24}
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    picked = [s["picked"] for s in result["samples"]]
    assert result["metrics"]["accuracy"] == pytest.approx(
        sum(p == s["answer"] for p, s in zip(picked, result["samples"])) / 6
    )
