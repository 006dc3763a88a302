"""Messages in the OpenAI shape, tool calls, tool schemas, and the role order every conversation must follow.

Shared by the formats: `messages` rows are parsed here whole; sharegpt and alpaca build Message objects
themselves and check them with `check_order`. Each problem names the message (its label, e.g.
`message 2` or `conversations[2]`), the field and what was expected.
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.data.records import Message, ToolCall
from lmforge.data.sources.problems import BAD_VALUE, EMPTY, MISSING, ORDER, RecordProblem, kind_of

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content", "reasoning")
ORDER_RULE = (
    "an optional system message first, then user and assistant taking turns; tool results follow an "
    "assistant message with tool_calls"
)
CALL_EXAMPLE = '{"name": ..., "arguments": {...}}'


def as_list(value: Any, field: str) -> list:
    """A list, or a string holding a JSON list (as CSV cells and many hub `tools` columns do)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RecordProblem(
                f"{field} is a string that is not valid JSON ({err.msg} at column {err.colno}); expected a list"
            ) from None
    if not isinstance(value, list):
        raise RecordProblem(f"{field} is {kind_of(value)}; expected a list")
    return value


def parse_messages(value: Any, field: str, label: str) -> list[Message]:
    """A non-empty list of OpenAI-style messages; `label` names each one ('message' -> 'message 3')."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        value = as_list(value, field)
    if not isinstance(value, list) or not value:
        raise RecordProblem(
            f'{field} is {kind_of(value)}; expected a non-empty list of {{"role", "content"}} objects',
            MISSING if value is None else BAD_VALUE,
        )
    return [parse_message(m, f"{label} {i}") for i, m in enumerate(value)]


def parse_message(m: Any, label: str) -> Message:
    if not isinstance(m, dict):
        raise RecordProblem(f'{label} is {kind_of(m)}; expected an object with "role" and "content"')
    if "role" not in m and "from" in m:
        raise RecordProblem(
            f'{label} has "from" and no "role": this looks like sharegpt data; set '
            "data.train[].format: sharegpt (and columns: {conversations: KEY})",
            MISSING,
        )
    extra = [k for k, v in m.items() if k not in MESSAGE_KEYS and v is not None]
    if extra:
        raise RecordProblem(
            f'{label} has key "{extra[0]}", which lmforge does not read yet; expected only '
            f"{', '.join(MESSAGE_KEYS)} (remove it, or its information would be lost silently)"
        )
    if m.get("role") is None:
        raise RecordProblem(f'{label} has no "role"; expected an object with "role" and "content"', MISSING)
    role = m["role"]
    if role not in ROLES:
        raise RecordProblem(f"{label} has role {json.dumps(role)}; expected one of {', '.join(ROLES)}")
    calls = parse_tool_calls(m.get("tool_calls"), f"{label} tool_calls") if m.get("tool_calls") is not None else None
    if calls and role != "assistant":
        raise RecordProblem(f"{label} ({role}) has tool_calls; expected them on assistant messages only")
    if "content" not in m and not calls:
        raise RecordProblem(f'{label} has no "content"; expected an object with "role" and "content"', MISSING)
    content = message_text(m.get("content"), label, role, optional=bool(calls))
    if role == "assistant" and not content.strip() and not calls:
        raise RecordProblem(f"{label} (assistant) has empty content; expected the reply text", EMPTY)
    return Message(
        role=role,
        content=content,
        tool_calls=calls or None,
        tool_call_id=_optional_str(m, "tool_call_id", label),
        name=_optional_str(m, "name", label),
        reasoning=_reasoning(m, label, role),
    )


def message_text(content: Any, label: str, role: str, optional: bool = False) -> str:
    """A string, or a list of {"type": "text", "text": ...} parts joined; null only where `optional`."""
    if content is None and optional:
        return ""
    if isinstance(content, list) and content and all(_is_text_part(p) for p in content):
        return "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise RecordProblem(
            f"{label} ({role}) has content {kind_of(content)}; expected a string (or a list of "
            '{"type": "text", "text": ...} parts)',
            MISSING if content is None else BAD_VALUE,
        )
    return content


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _optional_str(m: dict, key: str, label: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordProblem(f"{label} has {key} {kind_of(value)}; expected a string")
    return value


def _reasoning(m: dict, label: str, role: str) -> str | None:
    given = [k for k in ("reasoning_content", "reasoning") if m.get(k) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise RecordProblem(f"{label} has both reasoning_content and reasoning; expected one of them")
    if role != "assistant":
        raise RecordProblem(f"{label} ({role}) has {given[0]}; expected it on assistant messages only")
    return _optional_str(m, given[0], label)


def parse_tool_calls(value: Any, field: str) -> list[ToolCall]:
    """OpenAI tool calls ({"id", "type", "function": {"name", "arguments"}}) or flat {"name", "arguments"} ones."""
    if isinstance(value, dict):
        value = [value]
    calls = as_list(value, field)
    if not calls:
        raise RecordProblem(f"{field} is an empty list; expected at least one call {CALL_EXAMPLE}")
    return [_tool_call(c, f"{field}[{i}]") for i, c in enumerate(calls)]


def _tool_call(call: Any, label: str) -> ToolCall:
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


def parse_tools(value: Any, field: str) -> list[dict[str, Any]] | None:
    """Tool schemas, as given or as a JSON string; bare {"name", ...} ones are wrapped as {"type": "function", ...}."""
    if value is None or value == "":
        return None
    tools = as_list(value, field)
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict) and "name" in tool["function"]:
            out.append(tool)
        elif isinstance(tool, dict) and isinstance(tool.get("name"), str):
            out.append({"type": "function", "function": tool})
        else:
            raise RecordProblem(
                f"{field}[{i}] is {kind_of(tool)} without a tool name; expected a JSON schema "
                '{"type": "function", "function": {"name": ..., "parameters": {...}}}'
            )
    return out or None


def check_order(
    messages: list[Message], labels: list[str], shown: list[str] | None = None, names: dict[str, str] | None = None
) -> None:
    """Raise unless the roles follow ORDER_RULE and the last message is the assistant's.

    `shown` gives each message's role as the data spells it and `names` how to spell an expected role
    (sharegpt: human, gpt, ...); both default to the canonical roles.
    """
    shown = shown or [m.role for m in messages]
    names = names or {r: r for r in ROLES}
    start = 1 if messages and messages[0].role == "system" else 0
    for i in range(start, len(messages)):
        allowed = _next_roles(messages[i - 1] if i > start else None)
        if messages[i].role not in allowed:
            article = "an" if shown[i - 1][:1].lower() in "aeio" else "a"  # "a user", "an assistant"
            after = f"after {article} {shown[i - 1]} message" if i else "first"
            expected = " or ".join(names[r] for r in allowed)
            raise RecordProblem(f"{labels[i]} has role {shown[i]} {after}; expected {expected} ({ORDER_RULE})", ORDER)
    if not messages or messages[-1].role != "assistant":
        last = f"the last message ({labels[-1]}) has role {shown[-1]}" if messages else "there are no messages"
        raise RecordProblem(f"{last}; expected {names['assistant']} (the reply to train on)", ORDER)


def _next_roles(previous: Message | None) -> tuple[str, ...]:
    if previous is None or previous.role == "system":
        return ("user",)
    if previous.role == "user":
        return ("assistant",)
    if previous.role == "assistant":
        return ("tool",) if previous.tool_calls else ("user",)
    return ("tool", "assistant")
