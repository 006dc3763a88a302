"""What data tests share: the data pipeline run on a validated recipe as `lmforge train` runs it (the recipe's
template resolved once, its data section as the frozen settings the data layer takes). Importable from any test:
pyproject puts tests/ on pytest's pythonpath."""

from __future__ import annotations

from lmforge.config.recipe import Recipe
from lmforge.config.settings import DataSettings, data_settings
from lmforge.data.build.pipeline import DataBundle, build_examples
from lmforge.model.load import run_template


def settings(recipe: Recipe, tokenizer) -> DataSettings:
    return data_settings(recipe, run_template(recipe.model, recipe.stage, tokenizer))


def build(recipe: Recipe, tokenizer, **kwargs) -> DataBundle:
    return build_examples(settings(recipe, tokenizer), tokenizer, **kwargs)
