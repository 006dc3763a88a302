"""Naming llama.cpp's pre-tokenizer by behaviour: the quickstart's byte-level BPE splits as GPT-2, Llama 3.1's
tokenizer as llama-bpe, and a tokenizer that normalises text (which llama.cpp's BPE does not) gets no name."""

from __future__ import annotations

import json
import shutil

from lmforge.infer.gguf.pretokenizer import llama_cpp_pre

from shared_assets import only


def test_a_tokenizer_trained_anew_splits_as_gpt2(tiny_tokenizer_dir):
    assert llama_cpp_pre(tiny_tokenizer_dir) == "gpt-2"


def test_a_normaliser_or_another_split_gets_no_name(tmp_path, tiny_tokenizer_dir):
    spec = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFKC"}}))
    assert llama_cpp_pre(tmp_path) is None
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    assert llama_cpp_pre(tmp_path) is None  # a leading space added: llama.cpp's gpt-2 adds none
    shutil.rmtree(tmp_path)
    assert llama_cpp_pre(tmp_path) is None  # no tokenizer.json at all


@only("llama3_1", "llama2", "qwen3")
def test_published_tokenizers(shared_tokenizer_dir):
    expected = {"llama3_1": "llama-bpe", "llama2": None, "qwen3": None}  # qwen3 normalises (NFC)
    assert llama_cpp_pre(shared_tokenizer_dir) == expected[shared_tokenizer_dir.name]
