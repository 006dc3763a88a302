"""A record as the formats read it: its raw object with the source's column mapping and sharegpt tags (`Row`),
and the `Format` it is read as (formats.py defines them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.records import Record
from lmforge.data.sources.problems import EMPTY, MISSING, RecordProblem, kind_of


@dataclass
class Row:
    """One record of the data with the source's column mapping and sharegpt tags."""

    obj: dict[str, Any]
    fmt: Format
    columns: dict[str, str]
    tags: dict[str, str]

    def key(self, canonical: str) -> str:
        """The data's key: mapped by `columns`, else the format's other name for it where the record uses that."""
        if canonical in self.columns:
            return self.columns[canonical]
        alias = self.fmt.aliases.get(canonical)
        return alias if alias in self.obj and canonical not in self.obj else canonical

    def field(self, canonical: str) -> str:
        key = self.key(canonical)
        mapped = " (mapped from {canonical} by data.train[].columns)" if canonical in self.columns else ""
        return f'"{key}"{mapped.format(canonical=canonical)}'

    def get(self, canonical: str) -> Any:
        return self.obj.get(self.key(canonical))

    def require(self, canonical: str) -> Any:
        value = self.get(canonical)
        if value is None:
            keys = ", ".join(self.obj) or "none"
            what = (
                f"no {self.field(canonical)} key (keys: {keys})"
                if self.key(canonical) not in self.obj
                else f"{self.field(canonical)} is null"
            )
            raise RecordProblem(f"{what}; expected format {self.fmt.name}: {self.fmt.example}", MISSING)
        return value

    def string(self, canonical: str, required: bool = True, reply: bool = False) -> str:
        value = self.require(canonical) if required else self.get(canonical)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RecordProblem(f"{self.field(canonical)} is {kind_of(value)}; expected a string")
        if reply and not value.strip():
            raise RecordProblem(f"{self.field(canonical)} is empty; expected the assistant's reply text", EMPTY)
        return value


@dataclass(frozen=True)
class Format:
    name: str
    reads: dict[str, tuple[str, ...]]  # kind -> the canonical columns its parser reads
    detect: dict[str, tuple[str, ...]]  # kind -> keys that all appear in a record of this format
    parsers: dict[str, Callable[[Row], Record]]  # kind -> parser
    example: str
    aliases: dict[str, str] = field(default_factory=dict)  # canonical -> another key the format's data uses

    @property
    def columns(self) -> tuple[str, ...]:
        """Every canonical column it reads, for one kind or another."""
        return tuple(dict.fromkeys(c for columns in self.reads.values() for c in columns))
