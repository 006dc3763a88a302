"""`lmforge export --gguf TYPE`: the exported Hugging Face folder also as one GGUF file for llama.cpp.

llama.cpp's own converter writes f32, f16, bf16 and q8_0 (run by infer/gguf/driver.py in a process of its own,
found by infer/gguf/converter.py); the other types (k-quants and the like) are llama.cpp's quantiser applied to
a conversion in the folder's own precision, through the llama_cpp bindings. The file's embedded chat template
is read back and must be the run's (infer/gguf/template.py). The GGUF is written beside its final name and
renamed when checked, so a file named `<name>-<TYPE>.gguf` is always complete.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from lmforge.console import say
from lmforge.errors import LmforgeError

CONVERTED = ("f32", "f16", "bf16", "q8_0")  # written by the converter itself
QUANTISED = (  # llama.cpp's quantiser (LLAMA_FTYPE_MOSTLY_<TYPE>); the i-quants need an importance matrix
    *("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l"),
    *("q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"),
)
GGUF_TYPES = CONVERTED + QUANTISED
LOSSLESS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # the conversion a quantisation starts from
DRIVER = "lmforge.infer.gguf.driver"
UNKNOWN_PRE = 3  # driver.UNKNOWN_PRE (that module is never imported here)


def gguf_name(folder: Path, kind: str) -> str:
    return f"{folder.name}-{kind}.gguf"


def check_gguf_type(kind: str) -> None:
    if kind not in GGUF_TYPES:
        raise LmforgeError(f"--gguf {kind}: unknown type; expected one of {', '.join(GGUF_TYPES)}")


def write_gguf(folder: Path, kind: str, template: str, dtype: str, llama_cpp: Path | None = None) -> Path:
    """Write `folder` (an exported model folder) as `folder/<name>-<kind>.gguf` carrying `template`."""
    from lmforge.infer.gguf.converter import CONVERTER, find_converter
    from lmforge.infer.gguf.pretokenizer import llama_cpp_pre
    from lmforge.infer.gguf.template import add_template, check_template, embedded_template

    check_gguf_type(kind)
    if kind in QUANTISED and importlib.util.find_spec("llama_cpp") is None:
        raise LmforgeError(
            f"--gguf {kind} is made by llama.cpp's quantiser, which lmforge runs through the llama_cpp bindings: "
            f"pip install llama-cpp-python (or export --gguf {LOSSLESS[dtype]} and run llama.cpp's llama-quantize)"
        )
    converter = find_converter(llama_cpp)
    target = folder / gguf_name(folder, kind)
    partial = folder / f".{target.name}.partial"
    first = partial if kind in CONVERTED else folder / f".{folder.name}-{LOSSLESS[dtype]}.partial"
    try:
        say(f"lmforge: export: converting to GGUF {_first_type(kind, dtype)} with {converter / CONVERTER}")
        _convert(folder, first, _first_type(kind, dtype), llama_cpp_pre(folder), converter)
        if first != partial:
            say(f"lmforge: export: quantising to {kind} with llama.cpp's quantiser")
            _run([sys.executable, "-m", DRIVER, "quantize", str(first), str(partial), kind], cwd=folder, what=kind)
        if embedded_template(partial) is None:
            say("lmforge: export: the converter wrote no chat template; writing the run's into the GGUF")
            add_template(partial, template)
        check_template(partial, template, final=target)
        partial.replace(target)
    finally:
        for leftover in (first, partial):
            leftover.unlink(missing_ok=True)
    say(f"lmforge: export: wrote {target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return target


def _first_type(kind: str, dtype: str) -> str:
    return kind if kind in CONVERTED else LOSSLESS[dtype]


def _convert(folder: Path, out: Path, outtype: str, pre: str | None, converter: Path) -> None:
    command = [sys.executable, "-m", DRIVER, "convert", str(folder.resolve()), str(out.resolve()), outtype]
    done = _run([*command, *([pre] if pre else [])], cwd=converter, what=outtype, check=False)
    if done.returncode == UNKNOWN_PRE:
        raise LmforgeError(
            f"{folder}: llama.cpp does not know this tokenizer's pre-tokenizer (how it splits text before BPE), "
            "and it splits text unlike every llama.cpp pre-tokenizer lmforge can check, so a GGUF would tokenise "
            "prompts unlike training; export the Hugging Face folder only, or add the tokenizer to llama.cpp "
            "(its convert_hf_to_gguf_update.py)"
        )
    _check(done, outtype)


def _run(command: list[str], cwd: Path, what: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the driver with lmforge importable from wherever it is running now."""
    source = str(Path(__file__).resolve().parents[3])  # the folder holding the lmforge package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        _check(done, what)
    return done


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode == 0:
        return
    output = (done.stderr or "") + (done.stdout or "")
    missing = re.search(r"No module named '([\w.]+)'", output)
    if missing:
        raise LmforgeError(
            f"llama.cpp's converter needs the Python package {missing.group(1).split('.')[0]!r}, which is not "
            f"installed: pip install 'lmforge[gguf]' (or pip install {missing.group(1).split('.')[0]})"
        )
    tail = "\n".join(output.strip().splitlines()[-12:])
    raise LmforgeError(
        f"writing the GGUF ({what}) failed; the Hugging Face folder is complete. llama.cpp said:\n{tail}"
    )
