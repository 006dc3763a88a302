"""lmforge.train.reward: a reward model under LoRA/DoRA/freeze trains its body's adapter and its new head whole
(scoring a trained run: tests/infer/test_score.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainingArguments

from lmforge.config.recipe import Recipe
from lmforge.data.pairs import build_preference_datasets
from lmforge.model.load import REWARD_HEAD as HEAD
from lmforge.train.reward import make_reward_trainer


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [{"prompt": f"What is {i} plus 2?", "chosen": f"{i} plus 2 is {i + 2}.",
             "rejected": f"{i} plus 2 is {i + 3}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_trainer(tmp_path: Path, model_dir: Path, tokenizer, tuning: dict):
    recipe = Recipe(stage="rm", model={"path": str(model_dir)}, tuning=tuning, output=str(tmp_path / "out"),
                    data={"train": [{"path": str(write_pairs(tmp_path / "p.jsonl"))}], "max_length": 64})
    data = build_preference_datasets(recipe, tokenizer)
    args = TrainingArguments(output_dir=recipe.output, per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2,
                             report_to="none", remove_unused_columns=False, save_strategy="no", disable_tqdm=True,
                             use_cpu=True)
    return make_reward_trainer(recipe, tokenizer, data, args, callbacks=[])


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_reward_model_trains_the_adapter_and_the_head(tmp_path, tiny_model_dir, tokenizer, method):
    from peft import PeftModelForSequenceClassification

    trainer = reward_trainer(tmp_path, tiny_model_dir, tokenizer, {"method": method, "lora": {"r": 4}})
    assert isinstance(trainer.model, PeftModelForSequenceClassification)
    before = _trainable(trainer.model)
    assert {n for n in before if "lora_" not in n} == {f"base_model.model.{HEAD}.modules_to_save.default.weight"}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert f"base_model.model.{HEAD}.modules_to_save.default.weight" in moved
    assert any("lora_B" in n for n in moved)


def test_freeze_reward_model_trains_the_last_layers_and_the_head(tmp_path, tiny_model_dir, tokenizer):
    trainer = reward_trainer(tmp_path, tiny_model_dir, tokenizer, {"method": "freeze", "freeze": {"layers": 1}})
    names = set(_trainable(trainer.model))
    assert f"{HEAD}.weight" in names and all(n.startswith(("model.layers.", f"{HEAD}.")) for n in names)
