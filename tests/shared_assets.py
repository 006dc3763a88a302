"""What tests share about ../shared: where it is, running a test on some of its tokenizers, loading one once.

Importable from any test (pyproject puts tests/ on pytest's pythonpath). Absence of ../shared is handled
by conftest's `shared_tokenizer_dir` fixture, which `only` parametrizes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from transformers import AutoTokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_TOKENIZERS = SHARED / "tokenizers"


def only(*names: str):
    """Run a test on these shared tokenizers (through the conftest fixture, so absence is handled there)."""
    return pytest.mark.parametrize("shared_tokenizer_dir", [SHARED_TOKENIZERS / n for n in names],
                                   indirect=True, ids=list(names))


@functools.lru_cache(maxsize=None)
def load(path: Path):
    """A tokenizer, loaded once per test session."""
    return AutoTokenizer.from_pretrained(path)
