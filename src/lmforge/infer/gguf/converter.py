"""Where llama.cpp's converter (convert_hf_to_gguf.py, its `conversion` package and gguf-py) is found.

In order: `--llama-cpp DIR`, then $LMFORGE_LLAMA_CPP (a llama.cpp checkout either way), then a copy in lmforge's
cache ($LMFORGE_CACHE or ~/.cache/lmforge, folder llama.cpp/<version>), which is fetched there once: llama.cpp
is not on PyPI as a module, but the llama-cpp-python source distribution vendors it whole, so pip downloads
that sdist (the version of the installed llama_cpp bindings, so that the converter writes what they load) and
only the converter's Python files are kept. Nothing of llama.cpp is part of lmforge itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lmforge.console import say
from lmforge.data.build.cache import CACHE_ENV, DEFAULT_ROOT
from lmforge.errors import LmforgeError

LLAMA_CPP_ENV = "LMFORGE_LLAMA_CPP"
CONVERTER = "convert_hf_to_gguf.py"
SDIST = "llama-cpp-python"
KEPT = (CONVERTER, "conversion", "gguf-py", "LICENSE")  # what the converter needs from the vendored llama.cpp


def find_converter(llama_cpp: Path | None = None) -> Path:
    """The llama.cpp folder holding the converter: the one given, else $LMFORGE_LLAMA_CPP, else the cached copy
    (fetched now if absent)."""
    for given, where in ((llama_cpp, "--llama-cpp"), (os.environ.get(LLAMA_CPP_ENV), f"${LLAMA_CPP_ENV}")):
        if given:
            folder = Path(given).expanduser()
            if not (folder / CONVERTER).is_file():
                raise LmforgeError(
                    f"{where} {folder}: no {CONVERTER} there; point it at a llama.cpp checkout "
                    "(git clone https://github.com/ggml-org/llama.cpp)"
                )
            return folder
    wanted = _bindings_version()
    folder = cache_dir() / (wanted or "latest")
    if not (folder / CONVERTER).is_file():
        _fetch(wanted, folder)
    return folder


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or str(DEFAULT_ROOT)).expanduser() / "llama.cpp"


def _bindings_version() -> str | None:
    try:
        return version(SDIST)
    except PackageNotFoundError:
        return None


def _fetch(wanted: str | None, folder: Path) -> None:
    """pip download the llama-cpp-python sdist and keep the converter's files in `folder` (written beside it and
    renamed when complete)."""
    spec = f"{SDIST}=={wanted}" if wanted else SDIST
    say(f"lmforge: export: fetching llama.cpp's GGUF converter once ({spec} source, about 80 MB) into {folder}")
    with tempfile.TemporaryDirectory(prefix="lmforge-llama-cpp-") as tmp:
        command = [sys.executable, "-m", "pip", "download", spec, "--no-deps", "--no-binary", SDIST, "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise LmforgeError(
                f"could not fetch llama.cpp's converter with `pip download {spec}` ({' / '.join(tail)}); "
                f"pass --llama-cpp DIR or set {LLAMA_CPP_ENV} to a llama.cpp checkout "
                "(git clone https://github.com/ggml-org/llama.cpp)"
            )
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        _extract(archives[0], partial)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)


def _extract(archive: Path, into: Path) -> None:
    """Only vendor/llama.cpp/{KEPT} of the sdist, as plain files under `into`."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts  # llama_cpp_python-V/vendor/llama.cpp/...
            if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or parts[3] not in KEPT:
                continue
            if not member.isfile() or ".." in parts:
                continue
            target = into.joinpath(*parts[3:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    if not (into / CONVERTER).is_file():
        raise LmforgeError(f"{archive.name} holds no vendor/llama.cpp/{CONVERTER}; pass --llama-cpp DIR instead")
