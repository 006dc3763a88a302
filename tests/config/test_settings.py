"""The recipe's data section as the frozen settings the data layer takes."""

import dataclasses

import pytest

from lmforge.config.load import validate_recipe
from lmforge.config.settings import DataSettings, Source, data_settings


def recipe(stage: str = "sft", **data):
    return validate_recipe(
        {
            "stage": stage,
            "model": {"path": "m"},
            "output": "o",
            "data": {"train": [{"path": "a.jsonl", "weight": 2}, {"name": "x"}], **data},
        }
    )


def test_every_data_key_reaches_the_settings():
    r = recipe(max_length=512, packing=True, eval={"fraction": 0.1}, registry="reg.yaml", workers=3, seed=7)
    got = data_settings(r, "TEMPLATE")
    assert (got.stage, got.template, got.max_length, got.packing, got.eval_fraction, got.eval_path) == (
        "sft",
        "TEMPLATE",
        512,
        True,
        0.1,
        None,
    )
    assert (got.registry, got.workers, got.seed) == ("reg.yaml", 3, 7)
    for name in DataSettings.__dataclass_fields__:  # every other key by its own name
        if name in type(r.data).model_fields:
            assert getattr(got, name) == getattr(r.data, name), name
    assert got.sources == (Source(path="a.jsonl", weight=2.0), Source(name="x"))
    assert got.sources[1].given == {"name"}  # what the recipe wrote, for a registry entry to yield to


def test_pretraining_takes_no_template_and_the_settings_are_frozen():
    got = data_settings(recipe("pt", eval={"path": "held.jsonl"}), "TEMPLATE")
    assert got.template is None and got.eval_path == "held.jsonl"
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.max_length = 1
