from pathlib import Path

import pytest
import yaml

from lmforge.config.load import dump_recipe, load_recipe, validate_recipe
from lmforge.errors import LmforgeError

BASE = {
    "stage": "sft",
    "model": {"path": "runs/base"},
    "data": {"train": [{"path": "data/chat.jsonl"}]},
    "output": "runs/out",
}


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def error_of(tmp_path: Path, recipe: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(LmforgeError) as err:
        load_recipe(write(tmp_path, recipe), overrides)
    return str(err.value)


def test_minimal_recipe_gets_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE))
    assert recipe.tuning.method == "lora"
    assert recipe.tuning.lora.target == "all-linear"
    assert recipe.data.max_length == 2048
    assert recipe.train.scheduler == "cosine"


def test_issue_example_recipe_validates(tmp_path):
    recipe = dict(BASE)
    recipe.update(
        tuning={"method": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target": "all-linear"}},
        data={"train": [{"path": "data/chat.jsonl"}], "eval": {"fraction": 0.02}, "max_length": 2048},
        train={
            "epochs": 3,
            "batch_size": 8,
            "grad_accum": 2,
            "lr": 2.0e-4,
            "scheduler": "cosine",
            "warmup": 0.03,
            "save_every": 500,
            "keep": 3,
        },
    )
    assert load_recipe(write(tmp_path, recipe)).train.grad_accum == 2


def test_typo_names_the_path_and_suggests(tmp_path):
    message = error_of(tmp_path, {**BASE, "train": {"lrr": 1e-4}})
    assert "unknown key 'train.lrr'" in message
    assert "did you mean 'lr'" in message


def test_typo_inside_a_list_item(tmp_path):
    message = error_of(tmp_path, {**BASE, "data": {"train": [{"path": "a.jsonl", "formt": "text"}]}})
    assert "data.train[0].formt" in message and "did you mean 'format'" in message


def test_typo_at_top_level(tmp_path):
    message = error_of(tmp_path, {**BASE, "ouput": "x"})
    assert "unknown key 'ouput'" in message and "did you mean 'output'" in message


def test_bad_choice_names_key_value_and_allowed(tmp_path):
    message = error_of(tmp_path, {**BASE, "tuning": {"method": "lorra"}})
    assert "tuning.method" in message and "'lorra'" in message
    assert "did you mean 'lora'" in message and "qlora" in message


def test_bad_number_names_key_and_value(tmp_path):
    message = error_of(tmp_path, {**BASE, "train": {"batch_size": 0}})
    assert "train.batch_size" in message and "greater than 0" in message and "got 0" in message


def test_missing_required_key(tmp_path):
    recipe = {k: v for k, v in BASE.items() if k != "output"}
    assert "missing key 'output'" in error_of(tmp_path, recipe)


def test_overrides_apply_with_types(tmp_path):
    recipe = load_recipe(
        write(tmp_path, BASE),
        ["train.lr=1e-4", "tuning.lora.r=8", "data.train.0.path=other.jsonl", "tuning.method=full", "output=x"],
    )
    assert recipe.train.lr == 1e-4 and recipe.tuning.lora.r == 8
    assert recipe.data.train[0].path == "other.jsonl" and recipe.output == "x"


def test_override_typo_uses_the_same_validation(tmp_path):
    message = error_of(tmp_path, BASE, ["train.epoch=2"])
    assert "unknown key 'train.epoch'" in message and "did you mean 'epochs'" in message


def test_override_without_equals(tmp_path):
    assert "key.sub=value" in error_of(tmp_path, BASE, ["train.lr"])


def test_override_bad_list_index(tmp_path):
    assert "index below 1" in error_of(tmp_path, BASE, ["data.train.3.path=x"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(LmforgeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: [sft\n")
    with pytest.raises(LmforgeError, match="not valid YAML"):
        load_recipe(bad)


def test_from_config_requires_full_tuning(tmp_path):
    message = error_of(tmp_path, {**BASE, "model": {"path": "x", "init": "from_config"}})
    assert "\n  model.init: from_config starts from random weights, so only tuning.method: full" in message
    assert "Value error" not in message and "(got {" not in message  # no dump of the whole recipe


def test_a_check_across_a_section_names_the_section(tmp_path):
    message = error_of(tmp_path, {**BASE, "data": {"train": [{"path": "a.jsonl", "hub": "org/set"}]}})
    assert "\n  data.train[0]: give exactly one of `path`, `name` (a registry entry) or `hub`" in message
    assert "(got {" not in message


def test_fractional_warmup_steps_rejected(tmp_path):
    assert "whole number" in error_of(tmp_path, {**BASE, "train": {"warmup": 2.5}})


def test_turn_settings_outside_sft_fail_with_the_key(tmp_path):
    dpo = {**BASE, "stage": "dpo", "data": {**BASE["data"], "train_on": "everything"}}
    message = error_of(tmp_path, dpo)
    assert "data.train_on applies to stage sft; stage 'dpo' trains on the final reply" in message
    pt = {**BASE, "stage": "pt", "data": {**BASE["data"], "split_turns": "always"}}
    assert "data.split_turns applies to stage sft; stage 'pt' trains on every token" in error_of(tmp_path, pt)
    saved = dump_recipe(validate_recipe({**BASE, "stage": "dpo"}))  # a run's recipe.yaml holds the defaults
    assert "train_on: all_assistant" in saved and validate_recipe(yaml.safe_load(saved)).stage == "dpo"


def test_dump_round_trips():
    recipe = validate_recipe(BASE)
    assert validate_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
