"""The small frozen settings the layers below the recipe take, and how a validated recipe becomes them.

The recipe (recipe.py, pydantic) stops at the edge: the data layer takes these plain dataclasses, so its
functions can be called and tested without building a recipe, and importing them costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.config.recipe import DataSource, Recipe

MIX_KEYS = ("weight", "ratio", "samples")


@dataclass(frozen=True)
class Source:
    """One dataset: a file, directory or glob (`path`), a registry entry (`name`) or a hub id (`hub`), read as
    `format` with `columns` renamed and sharegpt `tags`; at most one of the mixing keys weight, ratio, samples."""

    path: str | None = None
    name: str | None = None
    hub: str | None = None
    subset: str | None = None
    split: str = "train"
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    weight: float | None = None
    ratio: float | None = None
    samples: int | None = None
    given: frozenset[str] = field(default=frozenset(), compare=False)  # the keys the recipe wrote (a registry
    # entry's values yield to these)

    def label(self) -> str:
        """How messages name the dataset."""
        return self.path or self.name or f"hub:{self.hub}"

    def mix_key(self) -> str | None:
        """The mixing key this source sets, if any."""
        return next((key for key in MIX_KEYS if getattr(self, key) is not None), None)


@dataclass(frozen=True)
class DataSettings:
    """What the data layer needs to turn sources into a stage's examples (see recipe.DataSpec for each key).

    `template` is the chat template's Jinja text (None for pretraining), resolved once by the caller.
    """

    stage: str
    sources: tuple[Source, ...]
    template: str | None = None
    registry: str | None = None
    eval_path: str | None = None
    eval_fraction: float | None = None
    max_length: int = 2048
    packing: bool = False
    train_on: str = "all_assistant"
    split_turns: str = "auto"
    truncation: str = "cut"
    on_error: str = "strict"
    cache: bool = True
    cache_dir: str | None = None
    workers: int | None = None
    seed: int = 42


def source_settings(source: DataSource) -> Source:
    """A recipe's (or a registry's) validated dataset entry as the data layer takes it."""
    fields = {name: _copy(getattr(source, name)) for name in Source.__dataclass_fields__ if name != "given"}
    return Source(**fields, given=frozenset(source.model_fields_set))


def data_settings(recipe: Recipe, template: str | None) -> DataSettings:
    """The data section of a validated recipe, with the chat template's text (None for stage pt)."""
    data = recipe.data
    same = {name: getattr(data, name) for name in DataSettings.__dataclass_fields__ if name in type(data).model_fields}
    return DataSettings(
        stage=recipe.stage,
        sources=tuple(source_settings(s) for s in data.train),
        template=template if recipe.stage != "pt" else None,
        eval_path=data.eval.path if data.eval else None,
        eval_fraction=data.eval.fraction if data.eval else None,
        **same,
    )


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
