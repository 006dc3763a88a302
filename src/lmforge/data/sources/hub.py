"""Whether the Hugging Face Hub can be reached, asked once per process before a hub id is loaded.

Without a network, huggingface_hub retries each request with back-off before it gives up: measured on a machine
whose DNS has no answer for huggingface.co, a tokenizer's hub id failed after 49 s and a hub dataset after 24 s.
So before the first hub id (a model, a tokenizer, a dataset) lmforge sends one HEAD request to the endpoint
(HF_ENDPOINT, else https://huggingface.co; through the proxy the environment sets) and waits at most
`CONNECT_TIMEOUT_S` seconds for any answer, name lookup included. When there is none, a model or tokenizer in the
local Hugging Face cache is loaded from there (local_files_only); anything else stops at once with a message that
says how to point at a local copy. HF_HUB_OFFLINE=1 skips the check: nothing is then asked of the Hub.

Data sources use it here; the model layer (model/load.py) and the run loader (infer/load.py) import it from here.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

from lmforge.console import say
from lmforge.errors import LmforgeError

ENDPOINT_ENV, OFFLINE_ENV = "HF_ENDPOINT", "HF_HUB_OFFLINE"
DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 3.0  # for the whole check
_TRUE = {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: huggingface_hub reads only its cache, and fails at once when a file is not there."""
    return os.environ.get(OFFLINE_ENV, "").upper() in _TRUE


def unreachable() -> str | None:
    """Why the Hub cannot be reached (the endpoint and the failure), or None when it answered or when offline mode
    is set. Asked once per process and endpoint."""
    return None if offline_mode() else _probe(endpoint())


@functools.cache
def _probe(url: str) -> str | None:
    """One HEAD request to the endpoint (any HTTP answer will do), through the proxy the environment sets, in a
    thread given `CONNECT_TIMEOUT_S` in all: a request's own timeouts do not bound the name lookup. An HTTP
    request rather than a TCP connection: some networks accept every connection and answer nothing."""
    import httpx

    outcome: list[str | None] = []

    def ask() -> None:
        try:
            httpx.head(url, timeout=CONNECT_TIMEOUT_S)
            outcome.append(None)
        except httpx.HTTPError as err:
            outcome.append(f"{type(err).__name__}: {_root_cause(err)}")

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 0.5)
    if not outcome:
        return f"{url}: no answer within {CONNECT_TIMEOUT_S:g} s"
    return None if outcome[0] is None else f"{url}: {outcome[0]}"


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return str(err) or type(err).__name__


def load_options(key: str, where: str, files: tuple[str, ...]) -> dict[str, Any]:
    """What from_pretrained needs to load `where`: nothing for a local path or when the Hub answers;
    local_files_only when it cannot be reached and the id is in the local cache (one of `files` is there);
    else the error, at once. `key` names where the id comes from (model.path, ...)."""
    if Path(where).expanduser().exists():
        return {}
    reason = unreachable()
    if reason is None:
        return {}
    if any(in_cache(where, name) for name in files):
        _say_once(f"lmforge: the Hugging Face Hub cannot be reached ({reason}); loading {where} from the local cache")
        return {"local_files_only": True}
    raise LmforgeError(unreachable_message(key, where, reason))


def check_dataset(key: str, hub_id: str) -> None:
    """Stop at once when a hub dataset is needed and the Hub cannot be reached (datasets has no per-call offline
    switch: with HF_HUB_OFFLINE=1 it reads its cache). A local folder given as `hub` is read without the Hub."""
    reason = None if Path(hub_id).expanduser().exists() else unreachable()
    if reason is not None:
        raise LmforgeError(unreachable_message(key, hub_id, reason, repo_type="dataset"))


def in_cache(hub_id: str, filename: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, filename, repo_type=repo_type), str)
    except ValueError:  # not a valid repo id
        return False


@functools.cache
def _say_once(line: str) -> None:
    say(line)


def unreachable_message(key: str, hub_id: str, reason: str, repo_type: str = "model") -> str:
    """The error for a hub id that is needed while the Hub cannot be reached: the id, why, and what to do."""
    flag = "--repo-type dataset " if repo_type == "dataset" else ""
    cached = in_cache(hub_id, "README.md", repo_type) if repo_type == "dataset" else False
    where = (
        f"{hub_id} is in the local Hugging Face cache: set {OFFLINE_ENV}=1 to read it from there"
        if cached
        else f"{hub_id} is not in the local Hugging Face cache"
    )
    if repo_type == "dataset":
        point = f"give it as the dataset's path (path: DIR in place of hub: {hub_id})"
    else:
        point = f"set {key}: DIR" if "." in key else f"pass DIR instead of {hub_id}"
    return (
        f"{key}: {hub_id!r} is not a local path, so it names a Hub {repo_type}, but the Hugging Face Hub cannot be "
        f"reached ({reason}); {where}. Download it where there is a network (hf download {hub_id} {flag}"
        f"--local-dir DIR), bring DIR here and {point}; or set {OFFLINE_ENV}=1 to use only what is cached"
    )
