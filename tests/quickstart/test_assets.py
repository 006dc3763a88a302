"""The quickstart's own tokenizer and tiny model."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmforge.quickstart import assets

CHAT = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "What is 7 times 6?"},
    {"role": "assistant", "content": "7 times 6 is 42."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.mark.parametrize("text", ["7 times 6 is 42.", "  Ünïcode ✓ and\ttabs\n", "unseen words: zebra 123456"])
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_special_tokens(tokenizer):
    assert tokenizer.eos_token == assets.IM_END
    assert tokenizer.pad_token == assets.ENDOFTEXT
    assert tokenizer.bos_token is None
    for token in assets.SPECIAL_TOKENS:
        assert tokenizer.convert_ids_to_tokens(tokenizer(token, add_special_tokens=False)["input_ids"]) == [token]
    assert len(tokenizer) <= assets.VOCAB_SIZE


def test_chat_template_renders_chatml_with_generation_blocks(tokenizer, tiny_tokenizer_dir):
    assert "chat_template" in (tiny_tokenizer_dir / "tokenizer_config.json").read_text()
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a calculator.<|im_end|>\n"
        "<|im_start|>user\nWhat is 7 times 6?<|im_end|>\n"
        "<|im_start|>assistant\n7 times 6 is 42.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and text.startswith(prompt)
    out = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "7 times 6 is 42.<|im_end|>"


def test_tokenizer_build_is_deterministic(tmp_path, tiny_tokenizer_dir):
    again = assets.build_tokenizer(tmp_path / "again", seed=0)
    assert (again / "tokenizer.json").read_bytes() == (tiny_tokenizer_dir / "tokenizer.json").read_bytes()


def test_tiny_model_has_a_few_million_parameters_and_matches_the_tokenizer(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    total = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < total < 10_000_000
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert (tiny_model_dir / "tokenizer.json").is_file()


def test_tiny_model_builds_from_its_config(tiny_model_dir):
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_base_model_is_seeded(tmp_path, tiny_tokenizer_dir, tiny_model_dir):
    from safetensors.torch import load_file

    again = assets.build_base_model(tmp_path / "again", tiny_tokenizer_dir, seed=0)
    ours, theirs = load_file(str(again / "model.safetensors")), load_file(str(tiny_model_dir / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
