"""Tool schemas, assistant tool calls and tool results through chat templates, on the shared tokenizers.

A tool-calling turn is trained on what the template renders for it (its content and calls) and its
end of turn; tool results and schemas are prompt. Templates without a tool format fail clearly.
"""

from __future__ import annotations

import json

import pytest

from lmforge.data.chat.masks import WHOLE, MaskPolicy, encode, generation_prompt
from lmforge.data.chat.templates import BUILTIN_TEMPLATES, TOOL_TEMPLATES, resolve_chat_template
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import Conversation, Message, ToolCall
from lmforge.errors import LmforgeError

from shared_assets import SHARED_TOKENIZERS as SHARED
from shared_assets import load, only

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
WEATHER = ToolCall("get_weather", {"city": "Paris"}, id="call_1")
TIME = ToolCall("get_time", "{}", id="call_2")  # arguments kept as the source's JSON string
RESULT = '{"temp_c": 21, "sky": "clear"}'


def tool_conversation(tools=TOOLS, source: str = "tools.jsonl:3") -> Conversation:
    return Conversation(
        [
            Message("system", "You are a helpful assistant."),
            Message("user", "What's the weather in Paris, and the time?"),
            Message("assistant", "", tool_calls=[WEATHER, TIME]),
            Message("tool", RESULT, tool_call_id="call_1", name="get_weather"),
            Message("tool", "noon (12:00 CET)", tool_call_id="call_2", name="get_time"),
            Message("assistant", "It is 21 °C and clear in Paris; the time is 12:00."),
            Message("user", "And in Rome?"),
            Message("assistant", "Let me check.", tool_calls=[ToolCall("get_weather", {"city": "Rome"})]),
            Message("tool", '{"temp_c": 25}', name="get_weather"),
            Message("assistant", "25 °C in Rome."),
        ],
        source=source,
        tools=tools,
    )


def labelled_texts(tok, enc) -> list[str]:
    runs, current = [], []
    for token, label in zip(enc.input_ids, enc.labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


# What each tool-capable built-in renders for the three assistant turns, up to the end-of-turn text.
CALLS = {
    "qwen": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
    ],
    "llama3": [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}\n{"name": "get_time", "parameters": {}}',
        'Let me check.\n{"name": "get_weather", "parameters": {"city": "Rome"}}',
    ],
    "mistral": [
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]',
        'Let me check. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Rome"}}]',
    ],
}
END_OF_TURN = {"qwen": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "{eos}"}


@pytest.mark.parametrize("name", TOOL_TEMPLATES)
def test_builtin_tool_templates_train_calls_not_results(shared_tokenizer_dir, name):
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, name)
    c = tool_conversation()
    enc = encode(tok, template, c, WHOLE)[0]
    end = END_OF_TURN[name].format(eos=tok.eos_token)
    replies = [CALLS[name][0], "It is 21 °C and clear in Paris; the time is 12:00.", CALLS[name][1], "25 °C in Rome."]
    runs = labelled_texts(tok, enc)
    assert len(runs) == len(replies), runs
    for run, reply in zip(runs, replies):
        # a text stop marker (not a special token here) may share its last token with what follows
        assert run.strip().startswith(reply + end), (run, reply)
        assert len(run.strip()) - len(reply + end) <= 2, run
    for message in c.messages:
        if message.role == "tool":  # rendered as written (qwen, llama3) or as a JSON string (mistral), untrained
            shown = next(t for t in (message.content, json.dumps(message.content)[1:-1]) if t in enc.text)
            assert not any(shown in run for run in runs)
    assert '"get_time"' in enc.text.split(CALLS[name][0])[0]  # the schemas come before the first call
    # transformers' assistant mask from the template's {% generation %} blocks agrees token for token
    out = tok.apply_chat_template(
        c.as_dicts(), tools=c.tools, chat_template=template, return_dict=True, return_assistant_tokens_mask=True
    )
    assert list(out["input_ids"]) == enc.input_ids
    assert [bool(m) for m in out["assistant_masks"]] == [label != IGNORE_INDEX for label in enc.labels]


@pytest.mark.parametrize("name", TOOL_TEMPLATES)
def test_tool_prompt_is_a_prefix_and_split_turns_agree(shared_tokenizer_dir, name):
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, name)
    c = tool_conversation()
    enc = encode(tok, template, c, WHOLE)[0]
    messages = c.as_dicts()
    prompt = generation_prompt(tok, template, messages[:5], tools=c.tools)  # after the tool results
    assert enc.text.startswith(prompt) and "get_weather" in prompt
    end = END_OF_TURN[name].format(eos=tok.eos_token)
    cut = lambda runs: [run[: run.rindex(end) + len(end)] for run in runs]  # noqa: E731 (a merged token may follow)
    samples = encode(tok, template, c, MaskPolicy("all_assistant", "always"))
    assert cut(run for s in samples for run in labelled_texts(tok, s)) == cut(labelled_texts(tok, enc))
    last = encode(tok, template, c, MaskPolicy("last_assistant", "never"))[0]
    assert labelled_texts(tok, last) == labelled_texts(tok, enc)[-1:]


@only("qwen3")
def test_qwen3_own_template_renders_tools(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    enc = encode(tok, tok.chat_template, tool_conversation(), WHOLE)[0]
    runs = labelled_texts(tok, enc)
    assert runs[0] == CALLS["qwen"][0] + "<|im_end|>"
    assert runs[2] == CALLS["qwen"][1] + "<|im_end|>"
    assert runs[3] == "<think>\n\n</think>\n\n25 °C in Rome.<|im_end|>"  # the last turn's empty reasoning block
    assert "<tool_response>\n" + RESULT + "\n</tool_response>" in enc.text


@only("qwen3")
def test_reasoning_before_a_tool_call_is_kept_or_split(shared_tokenizer_dir):
    """Qwen3 keeps reasoning after the last user message (a multi-step tool exchange), drops it before."""
    tok = load(shared_tokenizer_dir)
    messages = [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=[WEATHER], reasoning="I need the weather tool."),
        Message("tool", RESULT),
        Message("assistant", "21 °C.", reasoning="Read the result."),
    ]
    c = Conversation(messages, "r.jsonl:1", tools=TOOLS)
    runs = labelled_texts(tok, encode(tok, tok.chat_template, c, WHOLE)[0])
    assert runs[0].startswith("<think>\nI need the weather tool.\n</think>\n\n<tool_call>")
    longer = Conversation(
        [*messages, Message("user", "Thanks"), Message("assistant", "Welcome.")], "r.jsonl:2", tools=TOOLS
    )
    samples = encode(tok, tok.chat_template, longer, MaskPolicy("all_assistant", "auto"))
    assert len(samples) == 3 and all(s.split for s in samples)
    assert labelled_texts(tok, samples[0])[0] == runs[0]


@pytest.mark.parametrize("name", sorted(set(BUILTIN_TEMPLATES) - set(TOOL_TEMPLATES)))
def test_builtins_without_tool_format_refuse_tools(shared_tokenizer_dir, name):
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, name)
    no_schemas = tool_conversation(tools=None)
    for c in (tool_conversation(), no_schemas):
        with pytest.raises(
            LmforgeError,
            match=rf'tools.jsonl:3: the chat template \(built-in "{name}"\) rejects this '
            rf"conversation: the {name} template has no tool format.*qwen",
        ):
            encode(tok, template, c, WHOLE)[0]


@pytest.mark.parametrize("name", ["llama3_1", "deepseek_v3"])
def test_own_templates_that_ignore_tools_fail(shared_tokenizer_dir, name):
    tok = load(SHARED / name)
    with pytest.raises(
        LmforgeError,
        match=r"tools.jsonl:3: the chat template ignores the tools the conversation "
        r"offers \(get_weather, get_time\).*built-in qwen, llama3, mistral",
    ):
        encode(tok, tok.chat_template, tool_conversation(), WHOLE)[0]
    with pytest.raises(
        LmforgeError,
        match=r"tools.jsonl:3: assistant turn 0 \(message 2\): tool calls not rendered: "
        r"the call to 'get_weather' is missing.*the chat template does not render "
        r"tool calls.*built-in qwen",
    ):
        encode(tok, tok.chat_template, tool_conversation(tools=None), MaskPolicy("all_assistant", "auto"))
    with pytest.raises(LmforgeError, match=r"tools.jsonl:3: assistant turn 0 \(message 2\): tool calls not rendered"):
        encode(tok, tok.chat_template, tool_conversation(tools=None), MaskPolicy("everything", "never"))[0]


@only("gemma3")
def test_own_template_that_rejects_tool_roles_says_so(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    with pytest.raises(
        LmforgeError,
        match=r"tools.jsonl:3: the chat template rejects this conversation: .*alternate"
        r".*uses tools.*built-in qwen, llama3, mistral",
    ):
        encode(tok, tok.chat_template, tool_conversation(tools=None), WHOLE)[0]


@only("llama3_1")
def test_tool_call_without_stop_fails(shared_tokenizer_dir):
    template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% for c in m['tool_calls'] or [] %}"
        "CALL {{ c['function']['name'] }}{% endfor %}{% if m['role'] != 'assistant' %}<|eot_id|>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    c = Conversation([Message("user", "hi"), Message("assistant", "", tool_calls=[WEATHER])], "x.jsonl:9")
    with pytest.raises(LmforgeError, match=r"x.jsonl:9: assistant turn 0 \(message 1\): no stop token"):
        encode(load(shared_tokenizer_dir), template, c, WHOLE)[0]


def test_schemas_render_as_json(shared_tokenizer_dir):
    """The schema text the built-ins write is valid JSON per tool (qwen, llama3: one per line; mistral: a list)."""
    tok = load(shared_tokenizer_dir)
    messages = [{"role": "user", "content": "hi"}]
    for name in ("qwen", "llama3"):
        text = generation_prompt(tok, resolve_chat_template(tok, name), messages, tools=TOOLS)
        lines = [line for line in text.splitlines() if line.startswith('{"type"')]
        assert [json.loads(line) for line in lines] == TOOLS
    text = generation_prompt(tok, resolve_chat_template(tok, "mistral"), messages, tools=TOOLS)
    assert json.loads(text.split("[AVAILABLE_TOOLS] ")[1].split("[/AVAILABLE_TOOLS]")[0]) == TOOLS
