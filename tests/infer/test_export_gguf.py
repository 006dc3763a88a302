"""`lmforge export --gguf`: llama.cpp (llama-cpp-python) generates from the GGUF exactly what transformers generates
from the folder, for the same prompt ids; the GGUF carries the run's template, and one that does not is refused.

The conversion tests need llama-cpp-python, the converter's own requirement sentencepiece, and a local copy of
llama.cpp's converter ($LMFORGE_LLAMA_CPP, else the copy `lmforge export --gguf` fetched into ~/.cache/lmforge):
they skip, saying which, where one is missing, and never fetch anything."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.data.build.cache import DEFAULT_ROOT
from lmforge.data.chat.masks import generation_prompt
from lmforge.errors import LmforgeError
from lmforge.infer.export import export
from lmforge.infer.gguf.converter import CONVERTER, LLAMA_CPP_ENV, cache_dir, find_converter
from lmforge.infer.gguf.template import BAD_SUFFIX, add_template, check_template, embedded_template
from lmforge.train.rundir import TEMPLATE_FILE

from cli_runs import lmforge

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What's 7 times 6? It's 42."}]
NEW_TOKENS = 16


def local_converter() -> Path:
    """The llama.cpp folder to convert with, or a skip saying what is missing (never a fetch)."""
    for module, what in (("llama_cpp", "llama-cpp-python"), ("sentencepiece", "sentencepiece")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{what} is not installed (pip install {what}); the GGUF tests need it")
    given = os.environ.get(LLAMA_CPP_ENV)
    try:
        cached = DEFAULT_ROOT.expanduser() / "llama.cpp" / version("llama-cpp-python")
    except PackageNotFoundError:
        cached = None
    for folder in (Path(given) if given else None, cached):
        if folder is not None and (folder / CONVERTER).is_file():
            return folder
    pytest.skip(
        f"no local copy of llama.cpp's {CONVERTER}: set {LLAMA_CPP_ENV} to a llama.cpp checkout, or run "
        f"`lmforge export SRC --out DIR --gguf f16` once to fetch it into {cached}"
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama with weights large enough that greedy decoding varies, and a saved training template that
    differs from its base tokenizer's own (as a run with `model.chat_template` set has)."""
    out = tmp_path_factory.mktemp("gguf") / "run"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.08)
    model.save_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.save_pretrained(str(out))
    (out / TEMPLATE_FILE).write_text(tokenizer.chat_template.replace("'<|im_start|>'", "'<|im_start|>' + '#'"))
    return out


@pytest.fixture(scope="module")
def f32_export(run_dir) -> Path:
    converter = local_converter()
    out = run_dir.parent / "out"
    done = lmforge(
        "export", str(run_dir), "--out", str(out), "--gguf", "f32", "--llama-cpp", str(converter), cwd=out.parent
    )
    assert done.returncode == 0, done.stderr
    return out


def greedy_transformers(folder: Path, ids: list[int]) -> list[int]:
    model, sequence = AutoModelForCausalLM.from_pretrained(str(folder)).eval(), list(ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            sequence.append(int(model(torch.tensor([sequence])).logits[0, -1].argmax()))
    return sequence[len(ids) :]


def greedy_llama_cpp(path: Path, ids: list[int], text: str | None = None) -> tuple[list[int], list[int] | None]:
    """(NEW_TOKENS greedy tokens after `ids`, llama.cpp's own tokens for `text` if given)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=128, verbose=False)
    try:
        tokens = []
        for token in llm.generate(ids, top_k=1, temp=0.0):
            tokens.append(token)
            if len(tokens) == NEW_TOKENS:
                break
        own = llm.tokenize(text.encode(), add_bos=False, special=True) if text is not None else None
        return tokens, own
    finally:
        llm.close()


def prompt_ids(folder: Path) -> tuple[str, list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = generation_prompt(tokenizer, (folder / TEMPLATE_FILE).read_text(), MESSAGES)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def test_llama_cpp_generates_what_transformers_generates_f32(f32_export, run_dir, tiny_model_dir):
    gguf = f32_export / "out-f32.gguf"
    text, ids = prompt_ids(f32_export)
    ours = greedy_transformers(f32_export, ids)
    theirs, tokenised = greedy_llama_cpp(gguf, ids, text)
    assert theirs == ours and len(set(ours)) > 4  # a varied sequence, not one token repeated
    assert tokenised == ids  # the pre-tokenizer lmforge named splits the prompt as training did
    trained = (run_dir / TEMPLATE_FILE).read_text()
    assert embedded_template(gguf) == trained != AutoTokenizer.from_pretrained(str(tiny_model_dir)).chat_template
    card = (f32_export / "README.md").read_text()
    assert "out-f32.gguf" in card and "- gguf" in card
    assert not list(f32_export.glob(".*partial*"))


def test_f16_and_a_k_quant(run_dir, tmp_path):
    converter = local_converter()
    f16 = export(run_dir, tmp_path / "f16", gguf="f16", llama_cpp=converter)
    text, ids = prompt_ids(f16)
    assert greedy_llama_cpp(f16 / "f16-f16.gguf", ids)[0] == greedy_transformers(f16, ids)
    import gguf

    quantised = export(run_dir, tmp_path / "q4", gguf="q4_k_m", llama_cpp=converter) / "q4-q4_k_m.gguf"
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(str(quantised)).tensors}
    assert "Q4_K" in kinds, kinds
    assert len(greedy_llama_cpp(quantised, ids)[0]) == NEW_TOKENS  # llama.cpp loads and runs it
    assert embedded_template(quantised) == (run_dir / TEMPLATE_FILE).read_text()
    assert sorted(p.name for p in (tmp_path / "q4").glob("*.gguf")) == ["q4-q4_k_m.gguf"]  # no intermediate left


def write_small_gguf(path: Path, template: str | None) -> None:
    """A GGUF with two keys and one tensor, written by the gguf package (no converter needed)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(1)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_whose_template_differs_is_refused_and_renamed(tmp_path):
    pytest.importorskip("gguf")
    path = tmp_path / "m-f16.gguf"
    write_small_gguf(path, "{{ messages }}")
    with pytest.raises(LmforgeError, match="differs from the run's .*first at character 11"):
        check_template(path, "{{ messages[0] }}")
    assert not path.exists() and (tmp_path / f"m-f16.gguf{BAD_SUFFIX}").is_file()
    write_small_gguf(path, None)
    with pytest.raises(LmforgeError, match="carries no chat template"):
        check_template(path, "{{ messages }}")


def test_a_template_is_written_into_a_gguf_that_has_none(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    write_small_gguf(path, None)
    add_template(path, "{{ messages }}")
    check_template(path, "{{ messages }}")
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("llama.block_count").contents() == 1
    assert reader.tensors[0].data.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert not list(tmp_path.glob(".*partial"))


def test_a_missing_converter_leaves_the_folder_complete(tmp_path, tiny_model_dir):
    empty = tmp_path / "not-llama-cpp"
    empty.mkdir()
    with pytest.raises(LmforgeError, match=f"--llama-cpp {empty}: no {CONVERTER} there"):
        export(tiny_model_dir, tmp_path / "out", gguf="f16", llama_cpp=empty)
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "README.md").is_file()
    with pytest.raises(LmforgeError, match="--gguf q3: unknown type; expected one of f32, f16"):
        export(tiny_model_dir, tmp_path / "out2", gguf="q3")
    assert not (tmp_path / "out2").exists()


def test_a_tokenizer_llama_cpp_cannot_reproduce_is_refused(run_dir, tmp_path):
    converter = local_converter()
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    spec = json.loads((run / "tokenizer.json").read_text())
    (run / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFKC"}}))
    with pytest.raises(LmforgeError, match="does not know this tokenizer's pre-tokenizer"):
        export(run, tmp_path / "out", gguf="f16", llama_cpp=converter)
    assert (tmp_path / "out" / "model.safetensors").is_file() and not list((tmp_path / "out").glob("*gguf*"))


def test_a_converter_that_cannot_be_fetched_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv(LLAMA_CPP_ENV, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip looks nowhere: no network, and nothing to find
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(LmforgeError, match=f"could not fetch llama.cpp's converter .* set {LLAMA_CPP_ENV}"):
        find_converter()
    assert not any(cache_dir().glob("*/" + CONVERTER))
