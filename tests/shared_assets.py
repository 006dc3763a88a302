"""What tests share about ../shared: where it is, running a test on some of its tokenizers, loading one once,
and which of its tokenizers' own templates never have the prefix property.

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

# Own templates whose generation prompt is not a prefix of the rendered conversation for any conversation with an
# assistant turn (DeepSeek-R1's ends with "<think>\n", which the rendered turns never hold): every trained turn is
# the generation prompt and the reasoning lmforge writes after it (data/chat/reasoning.py), so a multi-turn
# conversation becomes one sample per turn and tests of the whole-conversation sample do not apply.
PROMPT_NOT_A_PREFIX = {"deepseek-r1-distill-qwen"}


def skip_if_prompt_not_a_prefix(tokenizer_dir: Path) -> None:
    if tokenizer_dir.name in PROMPT_NOT_A_PREFIX:
        pytest.skip(f"{tokenizer_dir.name}'s generation prompt is never a prefix of the conversation (shared_assets)")


# Own templates the judge's ../shared/check/mask_check.py cannot pass on: it wants each labelled run to start with
# the reply (or a <think> block), but the labels start where the generation prompt ends, and these templates have
# the model write more there. tests/data/chat/test_token_level.py checks them exactly instead.
MASK_CHECK_INAPPLICABLE = {
    "gpt-oss": "the model writes the harmony header (<|message|>, <|channel|>final<|message|>) before the reply",
    "deepseek-r1-distill-qwen": "the generation prompt opens the think block (<think>\n), so the labels start "
    "inside it, and multi-turn conversations are one sample per turn",
}


def skip_if_mask_check_inapplicable(tokenizer_dir: Path) -> None:
    reason = MASK_CHECK_INAPPLICABLE.get(tokenizer_dir.name)
    if reason:
        pytest.skip(f"mask_check.py does not apply to {tokenizer_dir.name}: {reason} (shared_assets)")


def only(*names: str):
    """Run a test on these shared tokenizers (through the conftest fixture, so absence is handled there)."""
    return pytest.mark.parametrize(
        "shared_tokenizer_dir", [SHARED_TOKENIZERS / n for n in names], indirect=True, ids=list(names)
    )


@functools.cache
def load(path: Path):
    """A tokenizer, loaded once per test session."""
    return AutoTokenizer.from_pretrained(path)
