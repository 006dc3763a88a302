"""The recipes shipped in examples/: each loads and validates, and the files it names inside the repository exist
and read as its stage's records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmforge.config.load import load_recipe
from lmforge.config.recipe import Recipe
from lmforge.config.settings import Source
from lmforge.data.records import KIND_BY_STAGE
from lmforge.data.sources.read import read_source

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "examples").glob("*.yaml"))
KNOWN = ["lora_chat.yaml", "quickstart_dpo.yaml", "quickstart_pt.yaml", "quickstart_rm.yaml", "quickstart_sft.yaml"]
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def input_paths(recipe: Recipe) -> dict[str, str]:
    """The local inputs a recipe names, by key; relative paths are relative to where lmforge runs."""
    paths = {
        "model.path": recipe.model.path,
        "model.tokenizer": recipe.model.tokenizer,
        "data.eval.path": recipe.data.eval.path if recipe.data.eval else None,
        "data.registry": recipe.data.registry,
    }
    if (recipe.model.chat_template or "").endswith(".jinja"):  # otherwise a built-in's name or null
        paths["model.chat_template"] = recipe.model.chat_template
    paths.update({f"data.train.{i}.path": source.path for i, source in enumerate(recipe.data.train)})
    return {key: path for key, path in paths.items() if path is not None}


def in_repository(key: str, path: str) -> bool:
    """False for what a recipe names outside the repository: runs/ (written by an earlier run, e.g. the
    quickstart) and a model's hub id; anything else must be shipped in the repository."""
    if Path(path).parts[0] == "runs":
        return False
    first = REPO / Path(path).parts[0]
    return not (key in ("model.path", "model.tokenizer") and HUB_ID.fullmatch(path) and not first.exists())


def test_the_known_recipes_are_found():
    assert set(KNOWN) <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_its_files_in_the_repository_exist(path, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples are run from the repository root
    recipe = load_recipe(path.relative_to(REPO))
    for key, where in input_paths(recipe).items():
        if not in_repository(key, where):
            continue
        assert (REPO / where).exists(), f"{path.name}: {key}: {where} is not in the repository"
        if key.startswith("data.") and key != "data.registry":
            assert read_source(Source(path=where), KIND_BY_STAGE[recipe.stage]).records  # strict: bad rows raise


def test_lora_chat_trains_an_adapter_on_the_shipped_chats(monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = load_recipe("examples/lora_chat.yaml")
    assert recipe.stage == "sft" and recipe.tuning.method == "lora"
    assert HUB_ID.fullmatch(recipe.model.path) and not in_repository("model.path", recipe.model.path)
    (source,) = recipe.data.train
    assert source.path == "examples/data/my_chats.jsonl" and in_repository("data.train.0.path", source.path)
    chats = read_source(source, "conversation").records
    assert 5 <= len(chats) <= 10
    assert any(sum(m.role == "assistant" for m in c.messages) > 1 for c in chats)  # one multi-turn chat at least
    assert {m.role for c in chats for m in c.messages} == {"system", "user", "assistant"}
