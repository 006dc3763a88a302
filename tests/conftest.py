"""Shared fixtures: the real tokenizers in ../shared (skipped outside CI when absent) and tiny local assets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared_assets import SHARED_TOKENIZERS


@pytest.fixture(autouse=True, scope="session")
def _private_data_cache(tmp_path_factory):
    """Keep the preprocessing cache of every test (and CLI it starts) out of the user's ~/.cache."""
    previous = os.environ.get("LMFORGE_CACHE")
    os.environ["LMFORGE_CACHE"] = str(tmp_path_factory.mktemp("lmforge_cache"))
    yield
    if previous is None:
        os.environ.pop("LMFORGE_CACHE", None)
    else:
        os.environ["LMFORGE_CACHE"] = previous


def shared_tokenizer_dirs() -> list[Path]:
    if not SHARED_TOKENIZERS.is_dir():
        return []
    return sorted(p for p in SHARED_TOKENIZERS.iterdir() if (p / "tokenizer.json").exists())


def require_shared() -> None:
    """Skip when ../shared is absent on a user's machine; fail under CI, where it must be present."""
    if SHARED_TOKENIZERS.is_dir():
        return
    message = f"{SHARED_TOKENIZERS} is absent (it sits beside the repository in CI and developer checkouts)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _tokenizer_param_ids() -> list:
    dirs = shared_tokenizer_dirs()
    return dirs if dirs else [pytest.param(None, id="shared-absent")]


@pytest.fixture(params=_tokenizer_param_ids(), ids=lambda p: p.name if isinstance(p, Path) else str(p))
def shared_tokenizer_dir(request) -> Path:
    """Each real tokenizer folder in ../shared/tokenizers, one test per folder."""
    require_shared()
    return request.param


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A small byte-level BPE tokenizer with a chat template, trained here on the synthetic task."""
    from lmforge.quickstart.assets import build_tokenizer

    out = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tokenizer(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny Llama-style decoder initialised from config (random weights) beside the tiny tokenizer."""
    from lmforge.quickstart.assets import build_base_model

    out = tmp_path_factory.mktemp("tiny_model")
    build_base_model(out, tokenizer_dir=tiny_tokenizer_dir, seed=0)
    return out
