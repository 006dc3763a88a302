"""Choosing a chat template, and what every built-in renders (their masks are tested in test_masks.py)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from lmforge.data.chat.templates import BUILTIN_TEMPLATES, resolve_chat_template
from lmforge.errors import LmforgeError

from shared_assets import SHARED_TOKENIZERS

NAMES = ["alpaca", "chatml", "deepseek", "gemma", "llama2", "llama3", "mistral", "phi3", "qwen", "vicuna"]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def test_builtins_are_files():
    assert sorted(BUILTIN_TEMPLATES) == NAMES
    assert all(path.suffix == ".jinja" and path.is_file() for path in BUILTIN_TEMPLATES.values())


def test_none_means_the_tokenizers_own():
    assert resolve_chat_template(SimpleNamespace(chat_template="{{ x }}"), None) == "{{ x }}"
    named = SimpleNamespace(chat_template={"default": "{{ d }}", "tool_use": "{{ t }}"})
    assert resolve_chat_template(named, None) == "{{ d }}"


def test_missing_template_says_what_to_set():
    tok = SimpleNamespace(chat_template=None, name_or_path="models/base")
    with pytest.raises(LmforgeError, match=r"models/base has no chat template.*model.chat_template.*chatml, deepseek"):
        resolve_chat_template(tok, None)


def test_builtin_by_name_and_jinja_path(tmp_path):
    tok = SimpleNamespace(chat_template=None)
    assert resolve_chat_template(tok, "chatml") == BUILTIN_TEMPLATES["chatml"].read_text(encoding="utf-8")
    path = tmp_path / "mine.jinja"
    path.write_text("{{ messages }}", encoding="utf-8")
    assert resolve_chat_template(tok, str(path)) == "{{ messages }}"
    with pytest.raises(LmforgeError, match=r"template file .*absent.jinja does not exist.*built-ins: alpaca"):
        resolve_chat_template(tok, str(tmp_path / "absent.jinja"))


def test_unknown_name_lists_the_builtins():
    with pytest.raises(LmforgeError, match=r'unknown template "chatlm" \(did you mean "chatml"\?\).*alpaca, chatml,'):
        resolve_chat_template(SimpleNamespace(chat_template=None), "chatlm")


@functools.cache
def load(path: Path):
    return AutoTokenizer.from_pretrained(path)


# The base-model llama2 tokenizer (no template of its own) renders the built-ins; conftest handles its absence.
ON_LLAMA2 = pytest.mark.parametrize(
    "shared_tokenizer_dir", [SHARED_TOKENIZERS / "llama2"], indirect=True, ids=["llama2"]
)


@ON_LLAMA2
def test_llama2_name_works_with_the_base_llama2_tokenizer(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    assert not tok.chat_template
    text = tok.apply_chat_template(CHAT[:3], chat_template=resolve_chat_template(tok, "llama2"), tokenize=False)
    assert text == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s>"


# (name, what the prompt for CHAT renders to with the llama2 tokenizer's <s> and </s>)
RENDERED = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    "Hello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Bye [/INST]",
    "vicuna": "<s>Be brief. USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT:",
    "alpaca": "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\nBye\n\n"
    "### Response:\n",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n"
    "<|assistant|>\n",
    "deepseek": "<s>Be brief.<｜User｜>Hi<｜Assistant｜>Hello!</s><｜User｜>Bye<｜Assistant｜>",
}
RENDERED["qwen"] = RENDERED["chatml"]


@pytest.fixture
def llama2_tokenizer(shared_tokenizer_dir):
    return load(shared_tokenizer_dir)


@ON_LLAMA2
@pytest.mark.parametrize("name", NAMES)
def test_builtin_renders_the_format(llama2_tokenizer, name):
    template = resolve_chat_template(llama2_tokenizer, name)
    prompt = llama2_tokenizer.apply_chat_template(
        CHAT, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    assert prompt == RENDERED[name]


@ON_LLAMA2
@pytest.mark.parametrize(
    "name, accepts",
    [("llama2", False), ("mistral", False), ("gemma", False), ("chatml", True), ("llama3", True), ("vicuna", True)],
)
def test_role_order(llama2_tokenizer, name, accepts):
    """Only formats built on user/assistant pairs reject two user messages in a row."""
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    render = lambda: llama2_tokenizer.apply_chat_template(  # noqa: E731
        messages, chat_template=resolve_chat_template(llama2_tokenizer, name), tokenize=False
    )
    if accepts:
        render()
    else:
        with pytest.raises(Exception, match="alternate user, assistant"):
            render()


@ON_LLAMA2
def test_qwen_renders_tools(llama2_tokenizer):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "3"},
        {"role": "tool", "content": "ok"},
    ]
    text = llama2_tokenizer.apply_chat_template(
        messages,
        tools=tools,
        chat_template=resolve_chat_template(llama2_tokenizer, "qwen"),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert '\n{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}\n</tools>' in text
    assert text.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n3\n</tool_response>\n<tool_response>\nok\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert re.search(r"\{%-?\s*generation", BUILTIN_TEMPLATES["qwen"].read_text(encoding="utf-8"))
