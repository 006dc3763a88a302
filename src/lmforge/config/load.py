"""Read a recipe file, apply `key.sub=value` overrides and validate, with errors a person can act on."""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmforge.config.paths import check_recipe_paths
from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe; overrides like `train.lr=1e-4` go through the same validation. Its relative
    paths are read from the current directory (paths.py says why, and checks them against the recipe's folder)."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides or []:
        _apply_override(raw, item)
    recipe = validate_recipe(raw, source=str(path))
    check_recipe_paths(recipe, path)
    return recipe


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e) for e in err.errors()]
        raise LmforgeError(f"{source}: invalid recipe:\n  " + "\n  ".join(problems)) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LmforgeError(f"recipe file {path} does not exist; pass the path of a YAML recipe (see examples/)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise LmforgeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"{path}: a recipe is a YAML mapping with keys like stage, model, data, train, output")
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise LmforgeError(f"override {item!r} is not of the form key.sub=value (e.g. train.lr=1e-4)")
    value = yaml.safe_load(text) if text else None
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _step_into(node, part, ".".join(parts[: depth + 1]), item)
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key, item)] = value
    else:
        node[last] = value


def _step_into(node: Any, part: str, where: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where, item)]
    if not isinstance(node, dict):
        raise LmforgeError(f"override {item!r}: {where} is not a section, so it has no sub-keys")
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    return child


def _list_index(node: list, part: str, where: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise LmforgeError(f"override {item!r}: {where} must be an index below {len(node)} into a list")
    return int(part)


def _describe(error: dict[str, Any]) -> str:
    loc = error["loc"]
    where = _format_loc(loc)
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {where!r}{suggestion} (allowed here: {', '.join(allowed)})"
    if error["type"] == "missing":
        return f"missing key {where!r}"
    if error["type"] == "literal_error":
        allowed = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
        hint = difflib.get_close_matches(str(error.get("input")), allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"{where}: {error.get('input')!r} is not allowed{suggestion} (allowed: {', '.join(allowed)})"
    got = error.get("input")
    if error["type"] == "value_error":  # lmforge's own checks: their messages say what is wrong and what to do
        message = error["msg"].removeprefix("Value error, ")
        if isinstance(got, dict):  # a check across a section's keys (or the recipe's): no dump of the section
            return f"{where}: {message}" if where else message
        return f"{where}: {message} (got {got!r})"
    return f"{where}: {error['msg']} (got {got!r})"


def _format_loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _fields_at(loc: tuple) -> list[str]:
    """The keys a recipe section accepts, found by walking the pydantic models along `loc`."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = _model_class(model).model_fields.get(part) if _model_class(model) else None
        if field is None:
            return []
        model = field.annotation
    cls = _model_class(model)
    return list(cls.model_fields) if cls else []


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """Unwrap Optional/list annotations down to the section model they hold, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found:
                return found
    return None
