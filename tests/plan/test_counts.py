"""Parameter counts on the meta device equal the loaded model's (lmforge/plan/counts.py)."""

from __future__ import annotations

import pytest

from lmforge.config.load import validate_recipe
from lmforge.model.adapters import SEQ_CLS, apply_tuning, parameter_counts
from lmforge.model.load import REWARD_HEAD, load_model, load_reward_model, load_tokenizer
from lmforge.plan.counts import count_parameters


@pytest.mark.parametrize(
    "stage, method", [("sft", "full"), ("sft", "lora"), ("sft", "dora"), ("sft", "freeze"), ("rm", "lora")]
)
def test_meta_counts_equal_the_real_model(tiny_model_dir, stage, method):
    recipe = validate_recipe(
        {
            "stage": stage,
            "model": {"path": str(tiny_model_dir), "dtype": "fp32"},
            "tuning": {"method": method, "lora": {"r": 4}, "freeze": {"layers": 1}},
            "data": {"train": [{"path": "unused.jsonl"}]},
            "output": "unused",
        }
    )
    tokenizer = load_tokenizer(recipe.model)
    counts = count_parameters(recipe, tokenizer)
    if stage == "rm":
        real = load_reward_model(recipe.model, recipe.tuning, tokenizer)
        real = apply_tuning(real, recipe.tuning, task_type=SEQ_CLS, head=REWARD_HEAD)
    else:
        real = apply_tuning(load_model(recipe.model, recipe.tuning, tokenizer=tokenizer), recipe.tuning)
    assert (counts.trainable, counts.total) == parameter_counts(real)
    assert counts.weight_bytes == 4
    assert counts.trainable_bytes == 4
