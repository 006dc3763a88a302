"""Reward scoring: a trained reward run scores a conversation as the model it trained does, one file line at a time."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, TrainingArguments

from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError
from lmforge.infer.score import RewardScorer, score_conversation, score_file
from lmforge.train.preference import make_preference_trainer

from recipe_builds import build

MESSAGES = [{"role": "user", "content": "What is 1 plus 2?"}, {"role": "assistant", "content": "1 plus 2 is 3."}]


@pytest.fixture(scope="module")
def lora_reward_run(tmp_path_factory, tiny_model_dir):
    """A LoRA reward run after one training step, saved as the run saves it, and the trained model."""
    tmp = tmp_path_factory.mktemp("rm")
    pairs = tmp / "p.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"What is {i} plus 2?",
                    "chosen": f"{i} plus 2 is {i + 2}.",
                    "rejected": f"{i} plus 2 is {i + 3}.",
                }
            )
            + "\n"
            for i in range(8)
        )
    )
    recipe = Recipe(
        stage="rm",
        model={"path": str(tiny_model_dir)},
        tuning={"method": "lora", "lora": {"r": 4}},
        data={"train": [{"path": str(pairs)}], "max_length": 64},
        output=str(tmp / "out"),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    args = TrainingArguments(
        output_dir=recipe.output,
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = make_preference_trainer(recipe, tokenizer, build(recipe, tokenizer), args, [])
    trainer.train()
    run = tmp / "run"
    trainer.model.save_pretrained(run)
    tokenizer.save_pretrained(run)
    return run, trainer.model.eval(), tokenizer


def reward_of(model, tokenizer, messages) -> float:
    ids = tokenizer(
        tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0])


def test_lora_reward_run_is_scored_as_trained(lora_reward_run):
    run, model, tokenizer = lora_reward_run
    expected = reward_of(model, tokenizer, MESSAGES)
    assert RewardScorer(run)(MESSAGES) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert score_conversation(run, MESSAGES) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_score_file_scores_each_line_in_order_and_names_a_bad_line(lora_reward_run, tmp_path):
    run, model, tokenizer = lora_reward_run
    other = [{"role": "user", "content": "What is 5 plus 2?"}, {"role": "assistant", "content": "5 plus 2 is 8."}]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": MESSAGES}) + "\n\n" + json.dumps({"messages": other}) + "\n")
    expected = [reward_of(model, tokenizer, m) for m in (MESSAGES, other)]
    assert score_file(run, path) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    path.write_text(json.dumps({"messages": MESSAGES}) + "\n" + json.dumps({"text": "no messages"}) + "\n")
    with pytest.raises(LmforgeError, match=f'{path}:2: expected a JSON object with a "messages" list'):
        score_file(run, path)
