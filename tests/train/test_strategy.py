"""`distributed:` to TrainingArguments options: FSDP2's config, and the DeepSpeed presets and user JSON merged
with the recipe (no deepspeed import: it is not installed here)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from pydantic import ValidationError

from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError
from lmforge.train.strategy import PRESETS, deepspeed_config, fsdp2_arguments, strategy_arguments


def make_recipe(distributed: dict | None = None, **train) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"path": "m"},
            "data": {"train": [{"path": "d.jsonl"}]},
            "train": {"batch_size": 4, "grad_accum": 2, "max_grad_norm": 0.5, **train},
            "distributed": distributed or {},
            "output": "out",
        }
    )


def test_ddp_adds_nothing():
    assert make_recipe().distributed.strategy == "ddp"
    assert strategy_arguments(make_recipe(), "fp32", 2) == {}


def test_fsdp2_shards_by_decoder_layer_and_checkpoints_sharded():
    args = fsdp2_arguments(make_recipe({"strategy": "fsdp2", "fsdp": {"offload": True}}, activation_checkpointing=True))
    assert args["fsdp"] is True and args["activation_checkpointing"] is False  # FSDP checkpoints the layers
    config = args["fsdp_config"]
    assert config["version"] == 2 and config["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert config["cpu_offload"] is True and config["activation_checkpointing"] is True
    assert config["state_dict_type"] == "SHARDED_STATE_DICT" and config["reshard_after_forward"] is True


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_preset_gets_the_recipes_batch_accumulation_clipping_and_precision(stage):
    config = deepspeed_config(make_recipe({"strategy": "deepspeed", "deepspeed": {"stage": stage}}), "bf16", 4)
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 4 * 2 * 4 and config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    shipped = json.loads((PRESETS / f"zero{stage}.json").read_text())
    assert shipped["train_micro_batch_size_per_gpu"] == "auto"  # the shipped file itself is left as it was


def test_offload_options_reach_zero():
    spec = {"strategy": "deepspeed", "deepspeed": {"stage": 3, "offload_optimizer": True, "offload_params": True}}
    zero = deepspeed_config(make_recipe(spec), "fp32", 1)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"


def test_parameter_offload_needs_stage_3():
    with pytest.raises(ValidationError, match="offload_params needs stage 3"):
        make_recipe({"strategy": "deepspeed", "deepspeed": {"stage": 2, "offload_params": True}})


def test_a_user_json_keeps_its_values_and_gets_the_autos(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 3}, "x": 1}))
    config = deepspeed_config(make_recipe({"strategy": "deepspeed", "deepspeed": {"config": str(path)}}), "fp16", 2)
    assert config["x"] == 1 and config["zero_optimization"] == {"stage": 3}
    assert config["gradient_accumulation_steps"] == 2 and config["fp16"]["enabled"] is True


def test_a_user_value_against_the_recipe_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8}))
    recipe = make_recipe({"strategy": "deepspeed", "deepspeed": {"config": str(path)}})
    with pytest.raises(LmforgeError, match=r"train_micro_batch_size_per_gpu to 8, but the recipe's train.batch_size"):
        deepspeed_config(recipe, "fp32", 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"ds.json:1: not valid JSON"),
        ("[1]", "not a JSON object"),
        ('{"zero_optimization": {"stage": 4}}', "stage is 4"),
    ],
)
def test_a_broken_user_json_is_named(tmp_path, text, message):
    path = tmp_path / "ds.json"
    path.write_text(text)
    with pytest.raises(LmforgeError, match=message):
        deepspeed_config(make_recipe({"strategy": "deepspeed", "deepspeed": {"config": str(path)}}), "fp32", 1)


def test_deepspeed_missing_is_said_plainly():
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(LmforgeError, match="needs the deepspeed package, which is not installed"):
        strategy_arguments(make_recipe({"strategy": "deepspeed"}), "fp32", 1)


def test_fsdp2_on_the_cpu_is_refused_not_run_unsharded():
    if torch.cuda.is_available():
        pytest.skip("an accelerator is visible here")
    with pytest.raises(LmforgeError, match="fsdp2 needs GPUs"):
        strategy_arguments(make_recipe({"strategy": "fsdp2"}), "fp32", 2)
