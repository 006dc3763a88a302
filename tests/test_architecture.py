"""The layers of ARCHITECTURE.md, checked on every import in src/lmforge (function-level imports too): a module
imports only the layers above it, so the structure cannot silently break."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"

# Each package's layer, top (0) to bottom; a module may import its own layer and those above it.
LAYER = {
    "config": 0,
    "data": 1,
    "model": 2,
    "train": 3,
    "infer": 4,
    "plan": 4,
    "serve": 5,
    "evaluate": 5,
    "commands": 6,
    "quickstart": 6,
    "cli": 7,
    "__main__": 8,
}
SHARED = {"errors", "console", "__init__"}  # lmforge/errors.py, console.py, the version: every layer's

# Inside data: the two contracts on top, then sources/ and chat/ (which know only the contracts), then build/.
DATA_GROUP = {"records": 0, "examples": 0, "rows": 0, "__init__": 0, "sources": 1, "chat": 1, "build": 2}
DATA_MAY_IMPORT = {0: {0}, 1: {0}, 2: {0, 1, 2}}  # and always its own folder
# The settings are the data layer's view of the recipe; a registry file is a recipe's dataset entries written
# elsewhere and is validated with the recipe's own schema there, and only there.
DATA_CONFIG = {"settings"}
RECIPE_SCHEMA_USERS = {"data/sources/registry.py"}
# Modules that must stay light: no chat machinery (jinja2, transformers) behind a constant or a packer.
LIGHT = {"data/examples.py", "data/build/packing.py", "train/preference_losses.py", "train/losses.py"}
HEAVY = ("jinja2", "transformers", "lmforge.data.chat", "lmforge.data.sources")


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def name_of(path: Path) -> list[str]:
    return [*path.relative_to(SRC).with_suffix("").parts]


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["lmforge", *name_of(path)[:-1]]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out += [(node.lineno, f"{module}.{alias.name}" if not node.module else module) for alias in node.names]
    return sorted(set(out))


def violations(path: Path, module: str) -> list[str]:
    """Why importing `module` from the file at `path` breaks the layers (empty when it does not)."""
    if not module.startswith("lmforge.") and module != "lmforge":
        rel = "/".join(name_of(path)) + ".py"
        return [f"{module} in a module that must stay light"] if rel in LIGHT and module.startswith(HEAVY) else []
    target = module.split(".")[1:]
    source = name_of(path)
    rel = "/".join(source) + ".py"
    if not target or target[0] in SHARED:
        return []
    if rel in LIGHT and module.startswith(HEAVY):
        return [f"{module} in a module that must stay light"]
    here, there = -1 if source[0] in SHARED else LAYER[source[0]], LAYER.get(target[0])
    if there is None:
        return []
    if there > here:
        return [f"{module}: layer {target[0]} is below {source[0]}"]
    if source[0] == "data" and target[0] == "config":
        if target[1:2] != ["settings"] and not (target[1:2] == ["recipe"] and rel in RECIPE_SCHEMA_USERS):
            return [f"{module}: the data layer takes config.settings, not the recipe"]
    if source[0] == "data" == target[0] and len(target) > 1:
        mine, theirs = DATA_GROUP[source[1]], DATA_GROUP.get(target[1], 0)
        if target[1] != source[1] and theirs not in DATA_MAY_IMPORT[mine]:
            return [f"{module}: data/{source[1]} may not import data/{target[1]}"]
    return []


def all_violations() -> list[str]:
    found = []
    for path in modules():
        for line, module in imported(path):
            found += [f"{path.relative_to(SRC)}:{line}: {why}" for why in violations(path, module)]
    return found


def test_imports_point_one_way():
    found = all_violations()
    assert not found, "imports against the layers of ARCHITECTURE.md:\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    "source, module, broken",
    [
        ("data/records.py", "lmforge.model.load", True),
        ("data/build/pipeline.py", "lmforge.commands.inspect", True),
        ("data/chat/masks.py", "lmforge.data.build.encode", True),
        ("data/sources/read.py", "lmforge.data.chat.masks", True),
        ("data/build/pipeline.py", "lmforge.config.recipe", True),
        ("data/examples.py", "jinja2", True),
        ("train/preference_losses.py", "lmforge.data.chat.masks", True),
        ("train/run.py", "lmforge.cli", True),
        ("model/load.py", "lmforge.infer.chat", True),
        ("data/build/pipeline.py", "lmforge.data.sources.read", False),
        ("data/sources/registry.py", "lmforge.config.recipe", False),
        ("train/run.py", "lmforge.data.build.pipeline", False),
        ("commands/inspect.py", "lmforge.model.load", False),
    ],
)
def test_the_check_sees_a_forbidden_import(source, module, broken):
    """The rule itself: each of these imports, added to that module, is (or is not) reported."""
    assert bool(violations(SRC / source, module)) is broken


def test_every_package_has_a_layer():
    packages = {name_of(p)[0].removesuffix(".py") for p in modules()}
    assert packages - SHARED <= set(LAYER), f"give each package a layer in LAYER: {packages - SHARED - set(LAYER)}"
