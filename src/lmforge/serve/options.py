"""What `lmforge serve` is told on its command line, read without loading torch (so that a bad flag or a port in
use is said at once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32
    max_queue: int = 256
    max_new_tokens: int = 1024


DEFAULT_LIMITS = Limits()


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """--adapter NAME=DIR, each name once."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        name = name.strip()
        if not sep or not name.strip() or not folder.strip():
            raise LmforgeError(f"--adapter {spec!r}: expected NAME=DIR, e.g. --adapter support=runs/support-lora")
        if name in out:
            raise LmforgeError(f"--adapter {name}=...: the name {name!r} is given twice; give each adapter its own")
        out[name] = Path(folder.strip())
    return out
