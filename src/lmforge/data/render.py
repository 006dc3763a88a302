"""Chat template rendering for the mask derivation: the template transformers compiles, called directly.

`masks.py` renders a conversation several times (the whole of it, and each assistant turn's prompt
and turn). `tokenizer.apply_chat_template` redoes per call what is the same for every call of a
template: looking the template up, copying the messages into plain data, reading the special-token
map; in a data pipeline that was most of the time. A `Renderer` renders with the same compiled
template (transformers' own compile: the same sandbox, filters, globals and `{% generation %}`
extension) and the same variables apply_chat_template passes:

    messages (keys whose value is None dropped; reasoning aliased to `reasoning_content` and
    `thinking`), tools, documents=None, add_generation_prompt, and the tokenizer's special-token
    map (bos_token, eos_token, pad_token, ...), read when the Renderer is made.

Records hold JSON data only (the readers build them from JSON), which transformers' plain-data copy
returns unchanged, and the sandbox cannot change them, so they are passed without a copy.
`render_spans` also returns the character spans the template's `{% generation %}` blocks produced,
from the same render, as transformers tracks them for `return_assistant_tokens_mask`.
tests/data/test_render.py checks the text and the spans against apply_chat_template.

A tokenizer class with its own apply_chat_template, or a transformers without the compile function,
is rendered through apply_chat_template, without spans (masks.py then cross-checks the generation
blocks with apply_chat_template's assistant mask).
"""

from __future__ import annotations

import re
from typing import Any

from transformers import PreTrainedTokenizerBase

try:
    from transformers.utils.chat_template_utils import _compile_jinja_template
except ImportError:  # another transformers layout: render through apply_chat_template
    _compile_jinja_template = None

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # transformers' order of preference


class Renderer:
    """Renders one template for one tokenizer; make one per batch (it reads the special tokens once)."""

    def __init__(self, tokenizer, template: str):
        named = tokenizer.chat_template
        if isinstance(named, dict) and template in named:  # a template's name, as apply_chat_template allows
            template = named[template]
        self.tokenizer, self.template = tokenizer, template
        self.direct = _compile_jinja_template is not None and \
            type(tokenizer).apply_chat_template is PreTrainedTokenizerBase.apply_chat_template
        self.has_generation = bool(GENERATION_TAG.search(template))
        self._variables = dict(tokenizer.special_tokens_map) if self.direct else {}
        self._compiled = None

    def prepare(self, messages: list[dict]) -> list[dict]:
        """The messages as apply_chat_template hands them to the template (render and render_spans take
        these, so that a conversation rendered several times is prepared once)."""
        return [_template_message(m) for m in messages] if self.direct else messages

    def render(self, messages: list[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = False) -> str:
        if not self.direct:
            return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tools=tools,
                                                      tokenize=False, add_generation_prompt=add_generation_prompt)
        return "".join(self._generate(messages, tools, add_generation_prompt))

    def render_spans(self, messages: list[dict], tools: list[dict] | None = None
                     ) -> tuple[str, list[tuple[int, int]] | None]:
        """(the text, the character spans of its {% generation %} blocks); spans None when the template
        has no such block or this renderer cannot track them."""
        if not (self.direct and self.has_generation):
            return self.render(messages, tools), None
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        pieces = self._generate(messages, tools, False)  # compiles the template first
        with self._compiled.environment.activate_tracker(blocks, spans):
            for block in pieces:
                blocks.append(block)
        return "".join(blocks), [tuple(span) for span in spans]

    def _generate(self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool):
        """The rendered pieces, as jinja's Template.render makes them: one context of the template's globals
        and the variables (here the globals are copied once, not merged from their ChainMap every render)."""
        if self._compiled is None:
            self._compiled = _compile_jinja_template(self.template)
            self._variables = {**self._compiled.globals, **self._variables}
        variables = {**self._variables, "messages": messages, "tools": tools, "documents": None,
                     "add_generation_prompt": add_generation_prompt}
        return self._compiled.root_render_func(self._compiled.new_context(variables, shared=True))


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message as apply_chat_template hands it to the template."""
    if any(value is None for value in message.values()):
        message = {key: value for key, value in message.items() if value is not None}
    reasoning = next((message[key] for key in _REASONING_KEYS if message.get(key) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message
