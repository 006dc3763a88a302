"""The recipe reference: a Markdown page of every recipe key, built from the schema in `recipe.py`.

docs/recipe.md is this page; tests/config/test_reference.py fails when it differs from what the schema says,
so a key added, renamed or re-described in `recipe.py` shows up in the docs by regenerating them.
"""

from __future__ import annotations

import re
import types
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from lmforge.config.recipe import Recipe

REGENERATE = "python -m lmforge.config.reference > docs/recipe.md"
EXAMPLE = """\
stage: sft
model:
  path: models/base             # a local directory or a hub id
data:
  train:
    - path: data/chat.jsonl
output: runs/my-sft
"""
HTML_LIKE = re.compile(r"<(?=[A-Za-z/!?])")  # `<output>` outside a code span would be read as an HTML tag
BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "at least"))  # pydantic's metadata


def recipe_reference() -> str:
    """The whole page: header, a minimal recipe, then one table per section, parents before their children."""
    lines = [
        "# Recipe reference",
        "",
        f"Generated from the schema in `src/lmforge/config/recipe.py` by `{REGENERATE}`; edit the schema, not this "
        "page. Every section rejects keys it does not know: a misspelled key is an error that names it, never "
        "ignored. Any key can also be set on the command line, with the same checks: "
        "`lmforge train recipe.yaml train.lr=1e-4 data.train.0.path=other.jsonl`.",
        "",
        "Relative paths (model.path, model.tokenizer, a model.chat_template or model.config file, data files, "
        "data.registry, distributed.deepspeed.config, data.cache_dir, output) are read from the current directory, "
        "where lmforge runs, not from the recipe's folder: `lmforge train examples/quickstart_sft.yaml` from the "
        "repository root reads `runs/quickstart/...` there. A relative path that is missing there but present "
        "beside the recipe stops the run with both places named. Paths inside a registry file are read from the "
        "registry's folder.",
        "",
        "A minimal complete recipe (every key not given takes the default listed below):",
        "",
        "```yaml",
        EXAMPLE.rstrip("\n"),
        "```",
    ]
    for name, model, about in sections(Recipe):
        lines += ["", f"## `{name}`" if name else "## Top-level keys", ""]
        lines += [_cell(about[0].upper() + about[1:]) + ".", ""] if about else []
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, field in model.model_fields.items():
            dotted = f"{name}.{key}" if name else key
            row = (
                f"`{dotted}`",
                type_name(field.annotation) + _bounds(field),
                default_text(field),
                field.description or "",
            )
            lines.append("| " + " | ".join(_cell(text) for text in row) + " |")
    return "\n".join(lines) + "\n"


def sections(model: type[BaseModel], name: str = "", about: str = "") -> list[tuple[str, type[BaseModel], str]]:
    """(dotted name, model, the parent key's description) for `model` and every section below it, in field order.

    A list of sections is named with `[]` (`data.train[]`); the top level has the name "".
    """
    found = [(name, model, about)]
    for key, field in model.model_fields.items():
        child = section_of(field.annotation)
        if child is not None:
            many = "[]" if list in map(get_origin, (field.annotation, *get_args(field.annotation))) else ""
            found += sections(child, f"{name}.{key}{many}" if name else f"{key}{many}", field.description or "")
    return found


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model a key holds (directly, as the items of a list, or beside null), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = section_of(arg)
        if found is not None:
            return found
    return None


def type_name(annotation: Any) -> str:
    """A readable type: `int`, `one of a | b`, `list of str`, `mapping`; or-null is left to the default."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return ", or ".join(type_name(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return "one of `" + " | ".join(str(arg) for arg in args) + "`"
    if origin is list:
        return "list of " + ("sections (below)" if section_of(args[0]) else type_name(args[0]))
    if origin is dict or annotation is dict:
        return "mapping"
    if section_of(annotation) is not None:
        return "section (below)"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as YAML reads it; `required` when there is none."""
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "its defaults"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _bounds(field: FieldInfo) -> str:
    """The numeric bounds and minimum length set on the field, e.g. `, > 0, < 1`."""
    found = [(sign, getattr(item, attr, None)) for item in field.metadata for attr, sign in BOUNDS]
    return "".join(f", {sign} {value}" for sign, value in found if value is not None)


def _cell(text: str) -> str:
    """Text safe in a Markdown table: `|` escaped, and a tag-like `<` outside code spans."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else HTML_LIKE.sub(r"\\<", part) for i, part in enumerate(parts))


if __name__ == "__main__":
    print(recipe_reference(), end="")
