"""Tool calls in a reply, found the way the model's own chat template writes them.

No list of formats: the template is asked. A probe conversation whose assistant turn calls a known tool
(`PROBE`) is rendered, once with one call and once with two, and the text the template wrote for the turn
is cut around the probe's name and arguments. That gives the literal text before a call's first field, the
text between its two fields (name and arguments, in the template's order), the text between two calls and
the text after the last one. A reply is a tool call when, after any content, it follows that shape; the
arguments are read as a JSON object. A template that does not render tool calls (or refuses tools) has no
format, and its replies stay plain text.

Found so: the built-in qwen (`<tool_call>{"name", "arguments"}</tool_call>`), llama3 (bare `{"name",
"parameters"}`) and mistral (`[TOOL_CALLS] [...]`) formats, and Qwen3's own template. DeepSeek's and gpt-oss's own
templates write no call for a message as lmforge hands it to templates (training cannot render them either), so
their replies stay text.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

PROBE = ("lmforge_probe_tool", {"lmforge_probe_key": "probe value"})
SECOND = ("lmforge_other_tool", {"lmforge_other_key": 7})
_REPLY = "lmforge probe reply"
_USER = {"role": "user", "content": "ping"}


def _schema(name: str, arguments: dict) -> dict:
    properties = {key: {"type": "string" if isinstance(v, str) else "integer"} for key, v in arguments.items()}
    parameters = {"type": "object", "properties": properties, "required": list(arguments)}
    return {"type": "function", "function": {"name": name, "description": "a probe", "parameters": parameters}}


def _call(name: str, arguments: dict, i: int) -> dict:
    """A probe call as lmforge hands calls to templates (data/records.ToolCall.as_dict: arguments an object)."""
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass(frozen=True)
class ToolFormat:
    """How one template writes tool calls: `opener` FIELD `middle` FIELD (`between` FIELD `middle` FIELD)* `closer`,
    the fields in `order` ("name", "arguments") or the reverse; `between` is None when the template's
    several-call form could not be read (then one call a reply)."""

    opener: str
    middle: str
    between: str | None
    closer: str
    order: tuple[str, str]

    def parse(self, text: str) -> tuple[str, list[dict[str, Any]]] | None:
        """(the content before the calls, the calls in OpenAI's shape) when `text` holds tool calls in this
        format, else None. `text` is the reply decoded with its special tokens (the stop token left out)."""
        start = text.find(self.opener.strip())
        if start < 0 or not self.opener.strip():
            return None
        pos, calls = start + len(self.opener.strip()), []
        while True:
            fields: dict[str, Any] = {}
            for i, field in enumerate(self.order):
                after = self.middle if i == 0 else (self.between or self.closer)
                pos = _read_field(text, pos, field, after, fields)
                if pos is None:
                    return None
                if i == 0:
                    pos = _consume(text, pos, self.middle)
                    if pos is None:
                        return None
            calls.append(fields)
            following = _consume(text, pos, self.between) if self.between is not None else None
            if following is not None and following < len(text):
                pos = following
                continue
            if not _squeezed(self.closer).startswith(_squeezed(text[pos:])):
                return None
            return text[:start].strip(), [_openai_call(c) for c in calls]


def _read_field(text: str, pos: int, field: str, after: str, out: dict[str, Any]) -> int | None:
    """Read a name (up to the literal that follows it) or a JSON object at `pos`; the position after it."""
    if field == "arguments":
        while pos < len(text) and text[pos].isspace():
            pos += 1
        try:
            value, end = json.JSONDecoder().raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        out["arguments"] = value
        return end
    marker = after.split()[0] if after.strip() else ""
    end = text.find(marker, pos) if marker else len(text)
    name = text[pos:end].strip() if end >= 0 else ""
    if not name or any(c.isspace() or c in "\"'{}" for c in name):
        return None
    out["name"] = name
    return end


def _consume(text: str, pos: int, literal: str) -> int | None:
    """The position after `literal` read at `pos`, whitespace being free on either side; None if it is not there."""
    i = pos
    for char in literal:
        if char.isspace():
            continue
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != char:
            return None
        i += 1
    return i


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _openai_call(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": fields["name"], "arguments": json.dumps(fields["arguments"], ensure_ascii=False)},
    }


def tool_format(tokenizer: Tokenizer, template: str) -> ToolFormat | None:
    """How `template` writes tool calls, found by rendering the probe; None when it writes none."""
    for content in ("", None):  # some templates write calls only where the content is None (DeepSeek V3)
        try:
            plain = _render(tokenizer, template, _REPLY)
            one = _render(tokenizer, template, content, [_call(*PROBE, 0)])
        except _REFUSALS:
            return None
        reply_at = plain.find(_REPLY)
        head = _common_prefix(plain[: max(reply_at, 0)], one)
        found = _fields(one, head, [PROBE])
        if found is not None:
            break
    else:
        return None
    first, second = found[0]
    end = plain[reply_at + len(_REPLY) :] if reply_at >= 0 else ""
    closer = one[second[1] :]
    if end and closer.endswith(end):
        closer = closer[: -len(end)]
    order = ("name", "arguments") if first[2] == "name" else ("arguments", "name")
    between = _between(tokenizer, template, content, head)
    return ToolFormat(one[head : first[0]], one[first[1] : second[0]], between, closer, order)


_REFUSALS = (jinja2.TemplateError, LmforgeError, TypeError, KeyError)


def _between(tokenizer: Tokenizer, template: str, content: str | None, head: int) -> str | None:
    """The text between two calls of one turn, or None where the template cannot write two."""
    try:
        two = _render(tokenizer, template, content, [_call(*PROBE, 0), _call(*SECOND, 1)])
    except _REFUSALS:
        return None
    found = _fields(two, head, [PROBE, SECOND])
    if found is None:
        return None
    return two[found[0][1][1] : found[1][0][0]]


def _render(tokenizer: Tokenizer, template: str, content: str | None, calls: list[dict] | None = None) -> str:
    """The probe conversation rendered as lmforge renders training data: a user turn, then an assistant turn
    with `content` and `calls`, the probe's tools offered."""
    from lmforge.data.chat.render import Renderer

    reply = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
    renderer = Renderer(tokenizer, template)
    return renderer.render(renderer.prepare([_USER, reply]), tools=[_schema(*PROBE), _schema(*SECOND)])


def _common_prefix(a: str, b: str) -> int:
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    return shared


def _fields(turn: str, pos: int, calls: list[tuple[str, dict]]) -> list[tuple[tuple[int, int, str], ...]] | None:
    """For each call, in the order written after `pos`, its two fields as (start, end, which) by position."""
    out = []
    for name, arguments in calls:
        at_name = turn.find(name, pos)
        at_args = _find_object(turn, arguments, pos)
        if at_name < 0 or at_args is None:
            return None
        fields = sorted([(at_name, at_name + len(name), "name"), (*at_args, "arguments")])
        if fields[0][1] > fields[1][0]:  # the name inside the arguments: not a format this reads
            return None
        out.append(tuple(fields))
        pos = fields[1][1]
    return out


def _find_object(text: str, value: dict, pos: int) -> tuple[int, int] | None:
    """Where the JSON object equal to `value` is written in `text` after `pos`."""
    key = json.dumps(next(iter(value)))
    at = text.find(key, pos)
    while at >= 0:
        brace = text.rfind("{", pos, at)
        if brace >= 0:
            try:
                decoded, end = json.JSONDecoder().raw_decode(text, brace)
            except json.JSONDecodeError:
                decoded = None
            if decoded == value:
                return brace, end
        at = text.find(key, at + 1)
    return None
