"""What tests share about ../shared: where it is, running a test on some of its tokenizers, loading one once,
and which of its tokenizers' own templates lmforge still refuses.

Importable from any test (pyproject puts tests/ on pytest's pythonpath). Absence of ../shared is handled
by conftest's `shared_tokenizer_dir` fixture, which `only` parametrizes and which applies
`refused_until_issue_14`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.errors import LmforgeError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_TOKENIZERS = SHARED / "tokenizers"

# The reasoning-model tokenizers whose own templates lmforge refuses until issue 14 (reasoning models trainable
# with their own templates), with the mask property each template fails.
REFUSED_OWN_TEMPLATES = {
    "deepseek-r1-distill-qwen": "prefix property: the generation prompt ends with '<think>\\n', which the "
    "training text does not have",
    "gpt-oss": "content not found: the training text puts '<|message|>' between the generation prompt and the reply",
}

# A test that uses a shared tokenizer's own template opts in with this marker; on the tokenizers above the
# `shared_tokenizer_dir` fixture then expects it to fail with lmforge's refusal (`xfail_if_refused`).
refused_until_issue_14 = pytest.mark.refused_until_issue_14


def only(*names: str):
    """Run a test on these shared tokenizers (through the conftest fixture, so absence is handled there)."""
    return pytest.mark.parametrize(
        "shared_tokenizer_dir", [SHARED_TOKENIZERS / n for n in names], indirect=True, ids=list(names)
    )


@functools.cache
def load(path: Path):
    """A tokenizer, loaded once per test session."""
    return AutoTokenizer.from_pretrained(path)


def xfail_if_refused(request: pytest.FixtureRequest, tokenizer_dir: Path) -> None:
    """A strict xfail for a test marked `refused_until_issue_14` on a tokenizer of REFUSED_OWN_TEMPLATES:
    it must fail with an LmforgeError (any other failure still fails), and passing fails too, so whoever
    fixes issue 14 removes the entry."""
    refused = REFUSED_OWN_TEMPLATES.get(tokenizer_dir.name)
    if refused is None or request.node.get_closest_marker("refused_until_issue_14") is None:
        return
    reason = (
        f"{tokenizer_dir.name}'s own template is refused until issue 14 (reasoning models trainable with "
        f"their own templates): {refused}"
    )
    request.applymarker(pytest.mark.xfail(strict=True, raises=LmforgeError, reason=reason))
