"""The tool-call parser, derived from each template by its probe: a call rendered by the template (as the model
would write it, up to its stop token) parses back to the same call; templates with no tool format have none."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lmforge.data.chat.masks import generation_prompt
from lmforge.data.chat.render import Renderer
from lmforge.data.chat.templates import BUILTIN_TEMPLATES, TOOL_TEMPLATES
from lmforge.infer.chat import stop_token_ids
from lmforge.serve.tools import tool_format

from shared_assets import load

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "a city"}}},
    },
}
CALLS = [
    {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}},
    },
    {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET"}}},
]
USER = {"role": "user", "content": "What is the weather in Zürich?"}
# The shared tokenizers' own templates that write tool calls for messages as lmforge hands them over.
SHARED_WITH_TOOLS = {"qwen3"}


def generated(tokenizer, template: str, calls: list[dict]) -> str:
    """The reply as the model would write it: the rendered turn after the prompt, cut at the first stop token."""
    renderer = Renderer(tokenizer, template)
    prompt = generation_prompt(tokenizer, template, [USER], [WEATHER])
    text = renderer.render(
        renderer.prepare([USER, {"role": "assistant", "content": "", "tool_calls": calls}]), [WEATHER]
    )
    shared = 0
    while shared < min(len(text), len(prompt)) and text[shared] == prompt[shared]:
        shared += 1
    ids = tokenizer(text[shared:], add_special_tokens=False)["input_ids"]
    stops = set(stop_token_ids(tokenizer, template))
    cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    reply = tokenizer.decode(ids[:cut], skip_special_tokens=False)
    # a tokenizer that does not know the template's end-of-turn token (the tiny one on llama3) keeps it as text
    plain = renderer.render(renderer.prepare([USER, {"role": "assistant", "content": "X"}]), [WEATHER])
    end = plain[plain.rindex("X") + 1 :]
    return reply.removesuffix(end) if end else reply


def check_round_trip(tokenizer, template: str) -> None:
    form = tool_format(tokenizer, template)
    assert form is not None
    for calls in (CALLS[:1], CALLS):
        content, parsed = form.parse(generated(tokenizer, template, calls))
        assert content in ("", "<think>\n\n</think>")  # qwen3 writes an empty think block first (left in content)
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] == [
            (c["function"]["name"], c["function"]["arguments"]) for c in calls
        ]
        assert all(c["type"] == "function" and c["id"].startswith("call_") for c in parsed)
    assert form.parse("It is sunny in Zürich.") is None


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_templates(tokenizer, name):
    template = BUILTIN_TEMPLATES[name].read_text(encoding="utf-8")
    if name in TOOL_TEMPLATES:
        check_round_trip(tokenizer, template)
    else:
        assert tool_format(tokenizer, template) is None


def test_content_before_a_call_is_kept(tokenizer):
    form = tool_format(tokenizer, BUILTIN_TEMPLATES["qwen"].read_text(encoding="utf-8"))
    content, calls = form.parse('Let me look.\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert content == "Let me look." and calls[0]["function"]["name"] == "get_time"
    assert form.parse('<tool_call>\n{"name": "get_time", "arguments": {broken}\n</tool_call>') is None


def test_shared_tokenizers_own_templates(shared_tokenizer_dir):
    tokenizer = load(shared_tokenizer_dir)
    template = tokenizer.chat_template
    if not template:
        pytest.skip(f"{shared_tokenizer_dir.name} has no chat template (a base model's tokenizer)")
    if shared_tokenizer_dir.name in SHARED_WITH_TOOLS:
        check_round_trip(tokenizer, template)
    else:
        assert tool_format(tokenizer, template) is None
