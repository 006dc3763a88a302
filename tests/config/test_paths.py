from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from lmforge.config.load import load_recipe
from lmforge.config.paths import recipe_paths
from lmforge.errors import LmforgeError
from lmforge.model.load import load_tokenizer

from cli_runs import lmforge, write_chat


def write_recipe(folder: Path, model: str, data: str, model_keys: dict | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"model": {"path": model, **(model_keys or {})}, "data": {"train": [{"path": data}]}, "output": "out"}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({**spec, **extra}))
    return path


def test_every_input_path_of_a_recipe_is_covered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(
        tmp_path,
        "m",
        "a.jsonl",
        model_keys={"tokenizer": "t", "chat_template": "my.jinja", "config": "c.json", "init": "from_config"},
        stage="sft",
        tuning={"method": "full"},
        distributed={"strategy": "deepspeed", "deepspeed": {"config": "ds.json"}},
    )
    raw = yaml.safe_load(path.read_text())
    raw["data"] |= {"eval": {"path": "e.jsonl"}, "registry": "reg.yaml"}
    path.write_text(yaml.safe_dump(raw))
    keys = dict(recipe_paths(load_recipe(path)))
    assert keys == {
        "model.path": "m",
        "model.tokenizer": "t",
        "model.chat_template": "my.jinja",
        "model.config": "c.json",
        "data.train[0].path": "a.jsonl",
        "data.eval.path": "e.jsonl",
        "data.registry": "reg.yaml",
        "distributed.deepspeed.config": "ds.json",
    }


def test_relative_paths_are_read_from_the_current_directory(tmp_path, tiny_tokenizer_dir, monkeypatch):
    """The examples' case: the recipe in a folder, its paths written from where lmforge runs."""
    shutil.copytree(tiny_tokenizer_dir, tmp_path / "models" / "tiny")
    write_chat(tmp_path / "chats.jsonl")
    path = write_recipe(tmp_path / "recipes", "models/tiny", "chats.jsonl")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(Path("recipes/recipe.yaml"))
    assert recipe.model.path == "models/tiny" and path.parent != tmp_path
    assert load_tokenizer(recipe.model).chat_template  # models/tiny from the current directory, not the hub


def test_a_path_beside_the_recipe_but_not_here_names_both_places(tmp_path, tiny_tokenizer_dir, monkeypatch):
    folder = tmp_path / "project"
    shutil.copytree(tiny_tokenizer_dir, folder / "tiny-model")  # one name, no slash: a hub id's shape
    write_chat(folder / "chats.jsonl")
    path = write_recipe(folder, "tiny-model", "chats.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(LmforgeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert f"read from the current directory, {elsewhere}" in message
    assert f"model.path: 'tiny-model' is not in the current directory ({elsewhere / 'tiny-model'})" in message
    assert f"but is beside the recipe ({folder / 'tiny-model'})" in message
    assert f"data.train[0].path: 'chats.jsonl' is not in the current directory ({elsewhere / 'chats.jsonl'})" in message
    assert f"run lmforge from {folder}" in message
    monkeypatch.chdir(folder)
    assert load_recipe(path).model.path == "tiny-model"  # from the recipe's folder the same recipe loads


def test_a_dot_relative_model_path_that_is_missing_is_not_asked_of_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were it asked, it would fail differently
    path = write_recipe(tmp_path, "./models/tiny", "chats.jsonl")
    start = time.perf_counter()
    with pytest.raises(LmforgeError) as err:
        load_tokenizer(load_recipe(path).model)
    assert f"model.path: './models/tiny' does not exist (looked for {tmp_path / 'models' / 'tiny'}" in str(err.value)
    assert time.perf_counter() - start < 2


@pytest.mark.slow  # a CLI process: ~8 s, most of it imports; the rule itself is tested in-process above
def test_the_command_line_run_from_another_folder_names_both_places(tmp_path, tiny_tokenizer_dir):
    folder = tmp_path / "project"
    shutil.copytree(tiny_tokenizer_dir, folder / "tiny-model")
    write_chat(folder / "chats.jsonl")
    write_recipe(folder, "tiny-model", "chats.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = lmforge("data", "stats", str(folder / "recipe.yaml"), cwd=elsewhere)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"but is beside the recipe ({folder / 'tiny-model'})" in done.stderr
    assert "huggingface" not in done.stderr.lower()
