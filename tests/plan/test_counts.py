"""Parameter counts on the meta device equal the loaded model's (lmforge/plan/counts.py)."""

from __future__ import annotations

import pytest

from lmforge.config.load import validate_recipe
from lmforge.model.adapters import apply_tuning, parameter_counts
from lmforge.model.load import load_model, load_tokenizer
from lmforge.plan.counts import count_parameters


@pytest.mark.parametrize("method", ["full", "lora", "dora", "freeze"])
def test_meta_counts_equal_the_real_model(tiny_model_dir, method):
    recipe = validate_recipe(
        {
            "model": {"path": str(tiny_model_dir), "dtype": "fp32"},
            "tuning": {"method": method, "lora": {"r": 4}, "freeze": {"layers": 1}},
            "data": {"train": [{"path": "unused.jsonl"}]},
            "output": "unused",
        }
    )
    tokenizer = load_tokenizer(recipe.model)
    counts = count_parameters(recipe, tokenizer)
    real = apply_tuning(load_model(recipe.model, recipe.tuning, tokenizer=tokenizer), recipe.tuning)
    assert (counts.trainable, counts.total) == parameter_counts(real)
    assert counts.weight_bytes == 4
    assert counts.trainable_bytes == 4
