import subprocess
import sys
import types
from pathlib import Path
from typing import Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lmforge.config.load import validate_recipe
from lmforge.config.recipe import Recipe
from lmforge.config.reference import EXAMPLE, REGENERATE, recipe_reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipe.md"


def schema_keys(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every key of the recipe by its dotted name (`data.train[].path`), walked here apart from reference.py."""
    keys = {}
    for name, field in model.model_fields.items():
        dotted = prefix + name
        keys[dotted] = field
        ann = field.annotation
        for member in get_args(ann) if get_origin(ann) in (Union, types.UnionType) else (ann,):
            many = get_origin(member) is list
            inner = get_args(member)[0] if many else member
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                keys.update(schema_keys(inner, dotted + ("[]." if many else ".")))
    return keys


def table_rows(page: str) -> dict[str, list[str]]:
    """key -> [type, default, description] for each table row of the page."""
    rows = {}
    for line in page.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").replace("\\|", "\0").split("|")]
            rows[cells[0].strip("`")] = [c.replace("\0", "|") for c in cells[1:]]
    return rows


def test_docs_page_is_current():
    assert DOCS.read_text(encoding="utf-8") == recipe_reference(), (
        f"docs/recipe.md does not match the recipe schema; regenerate it with `{REGENERATE}`"
    )


def test_module_prints_the_page():
    done = subprocess.run(
        [sys.executable, "-m", "lmforge.config.reference"], capture_output=True, text=True, check=True
    )
    assert done.stdout == recipe_reference()


def test_every_key_has_a_row_with_its_dotted_name():
    keys = schema_keys(Recipe)
    assert {"stage", "tuning.lora.r", "data.train[].path", "data.eval.fraction", "preference.beta"} <= set(keys)
    rows = table_rows(recipe_reference())
    missing, unknown = sorted(set(keys) - set(rows)), sorted(set(rows) - set(keys))
    assert not missing and not unknown, f"keys without a row: {missing}; rows of no key: {unknown}"


def test_every_key_has_a_description():
    missing = [key for key, field in schema_keys(Recipe).items() if not (field.description or "").strip()]
    assert not missing, f"recipe keys without a description (add description= in recipe.py): {', '.join(missing)}"


def test_defaults_read_back_as_the_schema_defaults():
    rows = table_rows(recipe_reference())
    for key, field in schema_keys(Recipe).items():
        shown = rows[key][1]
        if field.is_required():
            assert shown == "required", key
        elif field.default_factory is None:
            assert yaml.safe_load(shown) == field.default, key
        elif not isinstance(value := field.default_factory(), BaseModel):
            assert yaml.safe_load(shown) == value, key


def test_types_and_bounds_are_readable():
    rows = table_rows(recipe_reference())
    assert rows["tuning.method"][0] == "one of `full | freeze | lora | dora | qlora`"
    assert rows["tuning.lora.dropout"][0] == "float, >= 0, < 1"
    assert rows["tuning.lora.target"][0] == "str, or list of str"
    assert rows["train.loss_chunk"][0] == "int, or one of `auto | off`"
    assert rows["train.extra"][0] == "mapping"
    assert rows["data.train"][:2] == ["list of sections (below), at least 1", "required"]


def test_example_recipe_is_valid_and_shown():
    recipe = validate_recipe(yaml.safe_load(EXAMPLE))
    assert recipe.stage == "sft" and recipe.data.train[0].path
    assert f"```yaml\n{EXAMPLE}```" in recipe_reference()
