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

A `{% generation %}` block renders its body as a macro (`caller`) and, with the tracker off, returns
that body's text unchanged; macro calls through the sandbox are most of the cost of a small template.
`render` (no spans wanted) therefore uses the template with each block replaced by its body, when that
provably renders the same: when no body assigns a variable (a macro keeps its assignments to itself;
namespace attributes are shared either way), uses loop controls, imports, defines macros or blocks, or
reads `caller`, `varargs` or `kwargs`. Otherwise it renders with the template as it is.
tests/data/chat/test_render.py checks the text and the spans against apply_chat_template.

A tokenizer class with its own apply_chat_template, or a transformers without the compile function,
is rendered through apply_chat_template, without spans (masks.py then cross-checks the generation
blocks with apply_chat_template's assistant mask).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes
from transformers import PreTrainedTokenizerBase

try:
    from transformers.utils.chat_template_utils import _compile_jinja_template
except ImportError:  # another transformers layout: render through apply_chat_template
    _compile_jinja_template = None

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # transformers' order of preference


class Renderer:
    """Renders one template for one tokenizer; make one per batch (it reads the special tokens once)."""

    def __init__(self, tokenizer: Tokenizer, template: str):
        named = tokenizer.chat_template
        if isinstance(named, dict) and template in named:  # a template's name, as apply_chat_template allows
            template = named[template]
        self.tokenizer, self.template = tokenizer, template
        self.direct = (
            _compile_jinja_template is not None
            and type(tokenizer).apply_chat_template is PreTrainedTokenizerBase.apply_chat_template
        )
        self.has_generation = bool(GENERATION_TAG.search(template))
        self._variables = dict(tokenizer.special_tokens_map) if self.direct else {}
        self._compiled = None
        self._plain = None  # the template without {% generation %} blocks where it renders the same, else _compiled
        self._global_names: tuple[str, ...] = ()

    def prepare(self, messages: list[dict]) -> list[dict]:
        """The messages as apply_chat_template hands them to the template (render and render_spans take
        these, so that a conversation rendered several times is prepared once)."""
        return [_template_message(m) for m in messages] if self.direct else messages

    def render(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
        if not self.direct:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.template,
                tools=tools,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        plain = self._templates()[1]
        return "".join(plain.root_render_func(self._context(plain, messages, tools, add_generation_prompt)))

    def render_spans(
        self, messages: list[dict], tools: list[dict] | None = None
    ) -> tuple[str, list[tuple[int, int]] | None]:
        """(the text, the character spans of its {% generation %} blocks); spans None when the template
        has no such block or this renderer cannot track them."""
        if not (self.direct and self.has_generation):
            return self.render(messages, tools), None
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        compiled = self._templates()[0]
        pieces = compiled.root_render_func(self._context(compiled, messages, tools, False))
        with compiled.environment.activate_tracker(blocks, spans):
            for block in pieces:
                blocks.append(block)
        return "".join(blocks), [tuple(span) for span in spans]

    def _templates(self) -> tuple[jinja2.Template, jinja2.Template]:
        """(the compiled template, the one `render` uses), compiled on first use."""
        if self._compiled is None:
            self._compiled = _compile_jinja_template(self.template)
            self._variables = {**self._compiled.globals, **self._variables}
            self._global_names = tuple(self._compiled.globals)
            self._plain = _inlined(self.template) if self.has_generation else self._compiled
        return self._compiled, self._plain

    def _context(
        self, compiled: jinja2.Template, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool
    ) -> jinja2.runtime.Context:
        """One context of the template's globals and the variables, as jinja's Template.render makes it through
        `new_context(shared=True)` (here the globals and their names are copied once, not read from their
        ChainMap every render)."""
        variables = {
            **self._variables,
            "messages": messages,
            "tools": tools,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        return compiled.environment.context_class(
            compiled.environment, variables, compiled.name, compiled.blocks, globals=self._global_names
        )


_SCOPE_CHANGES = (
    nodes.Macro,
    nodes.Break,
    nodes.Continue,
    nodes.Import,
    nodes.FromImport,
    nodes.Include,
    nodes.Block,
    nodes.Extends,
)
_MACRO_NAMES = ("caller", "varargs", "kwargs")


@functools.lru_cache(maxsize=64)
def _inlined(template: str) -> jinja2.Template:
    """`without_generation_blocks` of the compiled template, made once per template (compiling takes
    milliseconds, and a Renderer is made per conversation in some paths)."""
    return without_generation_blocks(_compile_jinja_template(template), template)


def without_generation_blocks(compiled: jinja2.Template, source: str) -> jinja2.Template:
    """The template with each {% generation %} block replaced by its body, compiled in the same environment;
    the template itself when some block's body would render differently outside a macro (module docstring)."""
    env = compiled.environment
    tree = env.parse(source)
    if not all(_inlinable(block, tree) for block in tree.find_all(nodes.CallBlock) if _is_generation(block)):
        return compiled
    _inline_generation(tree)
    return env.template_class.from_code(env, env.compile(tree), env.make_globals(None))


def _is_generation(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.CallBlock)
        and isinstance(node.call.node, nodes.ExtensionAttribute)
        and node.call.node.name == "_generation_support"
        and not node.args
        and not node.call.args
    )


def _inlinable(block: nodes.CallBlock, tree: nodes.Template) -> bool:
    """Whether the block's body renders the same outside its macro: it uses nothing a macro scopes (loop
    controls, macros, imports, caller), and no name it assigns is read anywhere else in the template (in
    the macro the assignment ends with the block; inlined, it would stay visible after it). A namespace
    attribute (`set ns.x`) is not a name: the same namespace object is changed either way."""
    inside = [node for body_node in block.body for node in (body_node, *body_node.find_all(nodes.Node))]
    if any(
        isinstance(node, _SCOPE_CHANGES) or (isinstance(node, nodes.Name) and node.name in _MACRO_NAMES)
        for node in inside
    ):
        return False
    assigned = {node.name for node in inside if isinstance(node, nodes.Name) and node.ctx == "store"}
    ids = {id(node) for node in inside}
    read_elsewhere = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load" and id(node) not in ids}
    return not assigned & read_elsewhere


def _inline_generation(node: nodes.Node) -> None:
    for field in node.fields:
        value = getattr(node, field)
        if isinstance(value, list):
            spliced = []
            for child in value:
                spliced.extend(child.body if _is_generation(child) else [child])
            setattr(node, field, spliced)
            children = spliced
        else:
            children = [value]
        for child in children:
            if isinstance(child, nodes.Node):
                _inline_generation(child)


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message as apply_chat_template hands it to the template."""
    if any(value is None for value in message.values()):
        message = {key: value for key, value in message.items() if value is not None}
    reasoning = next((message[key] for key in _REASONING_KEYS if message.get(key) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message
