"""A message's content: a string or a list of parts, and the tool calls parts and messages hold.

Parts come in two spellings: OpenAI's {"type": "text", "text": ...} and LLaMA-Factory's typed parts
{"type": "text" | "reasoning" | "tool_call", "value": ...} (its newer JSON Lines format). Text parts are joined as
they are, with nothing between them, as both do; reasoning parts are the message's reasoning; a tool_call part holds
one call as JSON {"name", "arguments"}. Media parts (image_url, input_audio, ...) are refused: lmforge trains
text-only models, and a placeholder such as <image> left in the text would be trained as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.records import ToolCall
from lmforge.data.sources.problems import BAD_VALUE, MEDIA, MISSING, RecordProblem, kind_of

MEDIA_PARTS = ("image", "image_url", "input_image", "video", "video_url", "audio", "audio_url", "input_audio", "file")
PART_TYPES = ("text", "reasoning", "tool_call")
PART_TEXT_KEYS = ("text", "value")  # OpenAI's spelling, LLaMA-Factory's
CALL_EXAMPLE = '{"name": ..., "arguments": {...}}'
PART_EXAMPLE = (
    '{"type": "text", "text": ...} (or LLaMA-Factory\'s {"type": "text" | "reasoning" | "tool_call", "value": ...})'
)
TEXT_ONLY = "lmforge trains text-only models, so media cannot be read"


@dataclass
class Content:
    text: str
    reasoning: str | None = None  # from reasoning parts
    calls: list[ToolCall] = field(default_factory=list)  # from tool_call parts


def parse_content(value: Any, label: str, role: str, optional: bool = False) -> Content:
    """A string, or a non-empty list of parts; null only where `optional` (an assistant message with tool calls)."""
    if value is None and optional:
        return Content("")
    if isinstance(value, str):
        return Content(value)
    if isinstance(value, list) and value:
        return _parts(value, label)
    raise RecordProblem(
        f"{label} ({role}) has content {kind_of(value)}; expected a string (or a list of parts {PART_EXAMPLE})",
        MISSING if value is None else BAD_VALUE,
    )


def _parts(parts: list, label: str) -> Content:
    texts, reasoning, calls = [], [], []
    for i, part in enumerate(parts):
        where = f"{label} content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in MEDIA_PARTS:
            raise RecordProblem(
                f"{where} is a media part ({kind}); {TEXT_ONLY} (remove the record, or the part and any placeholder "
                "for it in the text)",
                MEDIA,
            )
        if kind not in PART_TYPES:
            shown = f"a part of type {json.dumps(kind)}" if isinstance(part, dict) else kind_of(part)
            raise RecordProblem(f"{where} is {shown}; expected a part {PART_EXAMPLE}")
        value = _part_value(part, where)
        if kind == "text":
            texts.append(value)
        elif kind == "reasoning":
            reasoning.append(value)
        else:
            calls.append(tool_call(call_json(value, where), where))
    return Content("".join(texts), "".join(reasoning) if reasoning else None, calls)


def _part_value(part: dict, where: str) -> str:
    extra = [k for k in part if k not in ("type", *PART_TEXT_KEYS)]
    given = [k for k in PART_TEXT_KEYS if k in part]
    if extra:
        raise RecordProblem(
            f'{where} has key "{extra[0]}", which lmforge does not read; expected only "type" and "text" (or '
            '"value"), or its information would be lost silently'
        )
    if len(given) != 1:
        what = "both" if given else "neither"
        raise RecordProblem(f'{where} has {what} "text" and "value"; expected one of them', MISSING)
    value = part[given[0]]
    if part["type"] == "tool_call" and isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise RecordProblem(f'{where} has "{given[0]}" {kind_of(value)}; expected a string')
    return value


def call_json(value: Any, where: str, expected: str = f"a tool call {CALL_EXAMPLE}") -> Any:
    """Tool calls given as JSON text, decoded (anything else as it is)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise RecordProblem(
            f"{where} is not valid JSON ({err.msg} at column {err.colno}); expected {expected}", BAD_VALUE
        ) from None


def tool_call(call: Any, label: str) -> ToolCall:
    """One call: OpenAI's {"id", "type", "function": {"name", "arguments"}} or a flat {"name", "arguments"}."""
    if not isinstance(call, dict):
        raise RecordProblem(f"{label} is {kind_of(call)}; expected an object {CALL_EXAMPLE}")
    fn = call.get("function", call)
    if not isinstance(fn, dict):
        raise RecordProblem(f'{label} "function" is {kind_of(fn)}; expected an object {CALL_EXAMPLE}')
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordProblem(
            f"{label} has name {kind_of(name)}; expected the tool's name as a string",
            MISSING if name is None else BAD_VALUE,
        )
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise RecordProblem(f"{label} has id {kind_of(call_id)}; expected a string")
    return ToolCall(name=name, arguments=_arguments(fn.get("arguments"), label), id=call_id)


def _arguments(value: Any, label: str) -> dict[str, Any]:
    """Arguments as an object (a JSON string is decoded: templates render objects, e.g. with `| tojson`)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise RecordProblem(
                f"{label} arguments is a string that is not valid JSON ({err.msg} at column "
                f"{err.colno}); expected a JSON object"
            ) from None
    if not isinstance(value, dict):
        raise RecordProblem(f"{label} arguments is {kind_of(value)}; expected a JSON object")
    return value
