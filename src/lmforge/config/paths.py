"""Where a recipe's relative paths point: one rule for every path in a recipe, checked in one place.

The rule: a relative path in a recipe is read from the current directory (where lmforge runs), as the paths of a
shell command are. It is the rule the examples rely on (examples/*.yaml name `runs/quickstart/...` from the
repository root) and the one that keeps a run's saved recipe.yaml usable: it holds the paths as they were given,
whichever folder it is written to. The keys it covers are `RECIPE_PATHS` (the outputs, `output` and
`data.cache_dir`, follow it too, and are made when missing). A registry's own entries are read from the registry
file's folder (data/sources/registry.py).

`check_recipe_paths` runs when a recipe file is loaded (`load.load_recipe`, which every command uses): a relative
path that is not under the current directory but is beside the recipe is an error naming both places, so a recipe
run from another folder never reads something else, and a model folder beside the recipe is never asked of the hub.
"""

from __future__ import annotations

import glob
from pathlib import Path

from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError

GLOB_CHARS = "*?["
BUILTIN_TEMPLATE_HINT = ".jinja"  # model.chat_template is a file only when it ends so; else a built-in name


def recipe_paths(recipe: Recipe) -> list[tuple[str, str]]:
    """(key, path) of every input path the recipe gives: the model, tokenizer, template and config files, the
    data files, the registry and a DeepSpeed config."""
    model = recipe.model
    found = [("model.path", model.path), ("model.tokenizer", model.tokenizer)]
    if model.chat_template and model.chat_template.endswith(BUILTIN_TEMPLATE_HINT):
        found.append(("model.chat_template", model.chat_template))
    if isinstance(model.config, str):
        found.append(("model.config", model.config))
    found += [(f"data.train[{k}].path", source.path) for k, source in enumerate(recipe.data.train)]
    if recipe.data.eval is not None:
        found.append(("data.eval.path", recipe.data.eval.path))
    found += [
        ("data.registry", recipe.data.registry),
        ("distributed.deepspeed.config", recipe.distributed.deepspeed.config),
    ]
    return [(key, path) for key, path in found if path]


def check_recipe_paths(recipe: Recipe, recipe_file: Path, cwd: Path | None = None) -> None:
    """Stop when a relative path is missing from the current directory but present beside the recipe file."""
    here = (cwd or Path.cwd()).resolve()
    beside = recipe_file.resolve().parent
    if beside == here:
        return
    misplaced = [
        (key, path)
        for key, path in recipe_paths(recipe)
        if _is_relative(path) and not _exists(here, path) and _exists(beside, path)
    ]
    if not misplaced:
        return
    lines = [
        f"{key}: {path!r} is not in the current directory ({here / path}) but is beside the recipe ({beside / path})"
        for key, path in misplaced
    ]
    raise LmforgeError(
        f"{recipe_file}: relative paths in a recipe are read from the current directory, {here}:\n  "
        + "\n  ".join(lines)
        + f"\nrun lmforge from {beside}, or write these paths from where you run it (or as absolute paths)"
    )


def _is_relative(path: str) -> bool:
    return not Path(path).expanduser().is_absolute()


def _exists(base: Path, path: str) -> bool:
    if any(c in path for c in GLOB_CHARS) and not (base / path).exists():
        return bool(glob.glob(str(base / path), recursive=True))
    return (base / path).exists()
