"""A hub id while the Hub cannot be reached: the message comes in seconds, not after a minute of retries.

Nothing here reaches a network: HF_ENDPOINT points at a closed local port (the discard port, where nothing
listens), so the one connection lmforge tries is refused at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.config.recipe import ModelSpec
from lmforge.config.settings import Source
from lmforge.data.sources import hub
from lmforge.data.sources.files import hub_rows
from lmforge.errors import LmforgeError
from lmforge.model.load import load_tokenizer

CLOSED = "http://127.0.0.1:9"
NEVER_CACHED = "lmforge-tests/never-downloaded-model"


@pytest.fixture
def closed_hub(monkeypatch):
    monkeypatch.setenv(hub.ENDPOINT_ENV, CLOSED)
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)


def test_an_unreachable_hub_model_id_fails_in_seconds_with_what_to_do(closed_hub):
    start = time.perf_counter()
    with pytest.raises(LmforgeError) as err:
        load_tokenizer(ModelSpec(path=NEVER_CACHED))
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert f"model.path: '{NEVER_CACHED}' is not a local path, so it names a Hub model" in message
    assert f"the Hugging Face Hub cannot be reached ({CLOSED}: ConnectError:" in message
    assert f"hf download {NEVER_CACHED} --local-dir DIR" in message and "set model.path: DIR" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_an_unreachable_hub_dataset_fails_in_seconds_with_what_to_do(closed_hub):
    start = time.perf_counter()
    with pytest.raises(LmforgeError) as err:
        list(hub_rows(Source(hub="lmforge-tests/never-downloaded-data")))
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert (
        "data.train[].hub: 'lmforge-tests/never-downloaded-data' is not a local path, so it names a Hub dataset"
        in message
    )
    assert "hf download lmforge-tests/never-downloaded-data --repo-type dataset --local-dir DIR" in message
    assert "path: DIR in place of hub: lmforge-tests/never-downloaded-data" in message


def test_offline_mode_skips_the_check(monkeypatch):
    monkeypatch.setenv(hub.ENDPOINT_ENV, CLOSED)
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    assert hub.unreachable() is None
    monkeypatch.delenv(hub.OFFLINE_ENV)
    assert hub.unreachable().startswith(f"{CLOSED}: ConnectError:")


def test_a_local_folder_is_never_checked(closed_hub, tiny_tokenizer_dir):
    assert hub.load_options("model.path", str(tiny_tokenizer_dir), ("tokenizer.json",)) == {}


@pytest.mark.slow  # a Python process of its own (~5 s): huggingface_hub reads its cache folder when imported
def test_a_cached_hub_model_loads_from_the_cache_without_the_hub(tmp_path, tiny_model_dir):
    snapshot = tmp_path / "hub" / "models--lmforge-tests--cached-model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in Path(tiny_model_dir).iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--lmforge-tests--cached-model" / "refs").mkdir()
    (tmp_path / "hub" / "models--lmforge-tests--cached-model" / "refs" / "main").write_text("0" * 40)
    code = (
        "import time; from lmforge.config.recipe import ModelSpec; from lmforge.model.load import load_tokenizer\n"
        "start = time.perf_counter(); tok = load_tokenizer(ModelSpec(path='lmforge-tests/cached-model'))\n"
        "print('loaded', len(tok), round(time.perf_counter() - start, 1))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), hub.ENDPOINT_ENV: CLOSED}
    env.pop(hub.OFFLINE_ENV, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded") and float(done.stdout.split()[-1]) < 5
    assert (
        "cannot be reached" in done.stderr and "loading lmforge-tests/cached-model from the local cache" in done.stderr
    )
