"""The Renderer renders exactly as apply_chat_template, and its {% generation %} spans give transformers'
assistant mask, on every shared tokenizer with its own template and every built-in."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.data.chat import render
from lmforge.data.chat.masks import WHOLE, encode
from lmforge.data.chat.render import Renderer
from lmforge.data.chat.spans import generation_marks
from lmforge.data.chat.templates import BUILTIN_TEMPLATES, TOOL_TEMPLATES, resolve_chat_template
from lmforge.data.records import Conversation, Message, ToolCall
from lmforge.errors import LmforgeError

from shared_assets import SHARED_TOKENIZERS

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CONVERSATIONS = [
    Conversation(
        [
            Message("system", "Be brief."),
            Message("user", "Hi <|im_end|> there"),
            Message("assistant", "Hello! Grüße 🚀"),
            Message("user", "More?"),
            Message("assistant", " ok\n"),
        ]
    ),
    Conversation(
        [
            Message("user", "2+2?"),
            Message("assistant", "4", reasoning="add two and two"),
            Message("user", "3+3?"),
            Message("assistant", "<think>\nadd\n</think>\n\n6"),
        ]
    ),
    Conversation(
        [
            Message("user", "Weather in Paris?"),
            Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="c1")]),
            Message("tool", '{"temp_c": 21}', tool_call_id="c1", name="get_weather"),
            Message("assistant", "21 °C."),
        ],
        tools=TOOLS,
    ),
]


@functools.cache
def load(path: Path):
    return AutoTokenizer.from_pretrained(path)


def templates(tok) -> dict[str, str]:
    out = {name: resolve_chat_template(tok, name) for name in BUILTIN_TEMPLATES}
    if tok.chat_template:
        out["own"] = tok.chat_template
    return out


def conversations_for(name: str) -> list[Conversation]:
    return CONVERSATIONS if name in (*TOOL_TEMPLATES, "own") else CONVERSATIONS[:2]


def reference(tok, template: str, messages: list[dict], tools, add_generation_prompt: bool) -> str | None:
    try:
        return tok.apply_chat_template(
            messages, chat_template=template, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception:  # noqa: BLE001 (a template may reject a conversation: then both must)
        return None


def test_renders_as_apply_chat_template(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    for name, template in templates(tok).items():
        renderer = Renderer(tok, template)
        assert renderer.direct
        compiled, plain = renderer._templates()
        assert (plain is not compiled) == renderer.has_generation, name  # built-ins render with blocks inlined
        for c in conversations_for(name):
            messages = c.as_dicts()
            for end in range(1, len(messages) + 1):
                for prompt in (False, True):
                    expected = reference(tok, template, messages[:end], c.tools, prompt)
                    if expected is None:
                        with pytest.raises(Exception):  # noqa: B017 (the same failure as apply_chat_template)
                            renderer.render(renderer.prepare(messages[:end]), c.tools, prompt)
                        continue
                    assert renderer.render(renderer.prepare(messages[:end]), c.tools, prompt) == expected, (
                        name,
                        end,
                        prompt,
                    )


def test_generation_spans_give_transformers_mask(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    for name, template in templates(tok).items():
        renderer = Renderer(tok, template)
        for c in conversations_for(name):
            messages = c.as_dicts()
            if reference(tok, template, messages, c.tools, False) is None:
                continue
            text, spans = renderer.render_spans(renderer.prepare(messages), c.tools)
            assert text == reference(tok, template, messages, c.tools, False)
            if not renderer.has_generation:
                assert spans is None
                continue
            out = tok.apply_chat_template(
                messages, chat_template=template, tools=c.tools, return_dict=True, return_assistant_tokens_mask=True
            )
            offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            assert generation_marks(offsets, spans) == [bool(m) for m in out["assistant_masks"]], name


@pytest.mark.parametrize("shared_tokenizer_dir", [SHARED_TOKENIZERS / "qwen3"], indirect=True, ids=["qwen3"])
def test_without_the_compiler_renders_through_apply_chat_template(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    monkeypatch.setattr(render, "_compile_jinja_template", None)
    renderer = Renderer(tok, tok.chat_template)
    messages = renderer.prepare(CONVERSATIONS[0].as_dicts())
    assert not renderer.direct
    assert renderer.render(messages) == tok.apply_chat_template(messages, tokenize=False)
    assert renderer.render_spans(messages) == (renderer.render(messages), None)


@pytest.mark.parametrize("shared_tokenizer_dir", [SHARED_TOKENIZERS / "qwen3"], indirect=True, ids=["qwen3"])
def test_masks_without_the_compiler_agree(shared_tokenizer_dir, monkeypatch):
    """Through apply_chat_template (no spans: its assistant mask cross-checks) the masks are the same."""
    tok = load(shared_tokenizer_dir)
    chatml = resolve_chat_template(tok, "chatml")
    # Qwen3's own template drops earlier turns' reasoning: the second conversation is split
    cases = [(chatml, CONVERSATIONS[0]), (tok.chat_template, CONVERSATIONS[0]), (tok.chat_template, CONVERSATIONS[1])]
    direct = [encode(tok, template, c) for template, c in cases]
    assert direct[-1][0].split
    monkeypatch.setattr(render, "_compile_jinja_template", None)
    assert [encode(tok, template, c) for template, c in cases] == direct
    wide = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}<|im_end|>\n{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(LmforgeError, match=r"the template's \{% generation %\} blocks mark other tokens"):
        encode(tok, wide, CONVERSATIONS[0], WHOLE)[0]


SCOPED = (
    "{%- set x = 'outer' -%}{%- for m in messages -%}{%- generation -%}{%- set x = m['content'] -%}{{ x }}"
    "{%- endgeneration -%}|{{ x }};{%- endfor -%}"
)


@pytest.mark.parametrize("shared_tokenizer_dir", [SHARED_TOKENIZERS / "qwen3"], indirect=True, ids=["qwen3"])
def test_generation_blocks_are_inlined_only_where_that_renders_the_same(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    shared = (
        "{%- set ns = namespace(n=0) -%}{%- for m in messages -%}{%- generation -%}{%- set ns.n = ns.n + 1 -%}"
        "{{ m['content'] }}{%- endgeneration -%}{{ ns.n }}{%- endfor -%}"
    )
    local = (
        "{%- for m in messages -%}{%- generation -%}{%- set c = m['content'] | trim -%}{{ c }}"
        "{%- endgeneration -%};{%- endfor -%}"
    )
    read_in_another_block = (
        "{% for m in messages %}{% generation %}{% set c = m['content'] %}{{ c }}"
        "{% endgeneration %}{% generation %}[{{ c }}]{% set c = 'z' %}{% endgeneration %}"
        "{% endfor %}"
    )
    cases = {
        SCOPED: False,
        read_in_another_block: False,
        local: True,
        shared: True,
        "{% for m in messages %}{% generation %}{{ caller is defined }}{% endgeneration %}{% endfor %}": False,
        "{% for m in messages %}{% generation %}{% for k in m %}{% break %}{% endfor %}{% endgeneration %}"
        "{% endfor %}": False,
    }
    for template, inlined in cases.items():
        renderer = Renderer(tok, template)
        compiled, plain = renderer._templates()
        assert (plain is not compiled) == inlined, template
        assert renderer.render(messages) == tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert Renderer(tok, SCOPED).render(messages) == "a|outer;b|outer;"
    assert Renderer(tok, local)._templates()[1] is Renderer(tok, local)._templates()[1]  # compiled once, reused
    env = Renderer(tok, SCOPED)._templates()[0].environment
    tree = env.parse(SCOPED)
    render._inline_generation(tree)  # what inlining regardless would render: not the same
    forced = env.template_class.from_code(env, env.compile(tree), env.make_globals(None))
    inlined = "".join(forced.root_render_func(forced.new_context({"messages": messages}, shared=True)))
    assert inlined == "a|a;b|b;"
