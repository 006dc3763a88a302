"""Messages in the OpenAI shape, tool calls, tool schemas, and the role order every conversation must follow.

Shared by the formats: `messages` rows are parsed here whole; sharegpt and alpaca build Message objects
themselves and check them with `check_order`. Each problem names the message (its label, e.g.
`message 2` or `conversations[2]`), the field and what was expected.

A message's content is a string or a list of parts (content.py: OpenAI's text parts, LLaMA-Factory's typed
parts with reasoning and tool calls). Reasoning comes as `reasoning_content`, `reasoning` or `thinking` (the
names templates read; one per message). LLaMA-Factory's per-message `loss_weight` is read where lmforge can
honour it: 0 on an assistant message leaves that turn untrained (Message.trained = False), 1 trains it as
data.train_on says; any other weight, or a weight above 0 on another role, is refused with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.data.records import Message, ToolCall
from lmforge.data.sources.content import CALL_EXAMPLE, parse_content, tool_call
from lmforge.data.sources.problems import BAD_VALUE, EMPTY, MISSING, ORDER, RecordProblem, kind_of

ROLES = ("system", "user", "assistant", "tool")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # one name, three spellings templates read
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", *REASONING_KEYS, "loss_weight")
ORDER_RULE = (
    "an optional system message first, then user and assistant taking turns; tool results may follow an "
    "assistant message, and only tool results follow one with tool_calls"
)


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
    if "content" not in m and not calls:
        raise RecordProblem(f'{label} has no "content"; expected an object with "role" and "content"', MISSING)
    content = parse_content(m.get("content"), label, role, optional=bool(calls))
    if calls and content.calls:
        raise RecordProblem(
            f"{label} has tool_calls and tool_call parts in its content; expected the calls in one place"
        )
    if (calls or content.calls) and role != "assistant":
        where = "tool_calls" if calls else "tool_call parts"
        raise RecordProblem(f"{label} ({role}) has {where}; expected them on assistant messages only")
    calls = calls or content.calls
    if role == "assistant" and not content.text.strip() and not calls:
        raise RecordProblem(f"{label} (assistant) has empty content; expected the reply text", EMPTY)
    return Message(
        role=role,
        content=content.text,
        tool_calls=calls or None,
        tool_call_id=_optional_str(m, "tool_call_id", label),
        name=_optional_str(m, "name", label),
        reasoning=_reasoning(m, label, role, content.reasoning),
        trained=_trained(m.get("loss_weight"), label, role),
    )


def message_text(content: Any, label: str, role: str) -> str:
    """A string, or a list of text parts joined (sharegpt turns: no reasoning or tool_call parts there)."""
    parsed = parse_content(content, label, role)
    if parsed.reasoning is not None or parsed.calls:
        part = "reasoning" if parsed.reasoning is not None else "tool_call"
        raise RecordProblem(
            f"{label} ({role}) has a {part} part; expected text parts here (OpenAI messages with reasoning and "
            "tool calls: use format: messages)"
        )
    return parsed.text


def _optional_str(m: dict, key: str, label: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordProblem(f"{label} has {key} {kind_of(value)}; expected a string")
    return value


def _reasoning(m: dict, label: str, role: str, from_parts: str | None) -> str | None:
    """The reasoning, under one of REASONING_KEYS or in reasoning parts of the content."""
    given = [k for k in REASONING_KEYS if m.get(k) is not None] + (["a reasoning part"] if from_parts else [])
    if not given:
        return None
    if len(given) > 1:
        raise RecordProblem(f"{label} has both {given[0]} and {given[1]}; expected the reasoning in one of them")
    if role != "assistant":
        raise RecordProblem(f"{label} ({role}) has {given[0]}; expected it on assistant messages only")
    return from_parts if from_parts else _optional_str(m, given[0], label)


def _trained(weight: Any, label: str, role: str) -> bool | None:
    """LLaMA-Factory's loss_weight: 0 leaves an assistant turn untrained (False), 1 lets data.train_on decide."""
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise RecordProblem(f"{label} has loss_weight {kind_of(weight)}; expected 0 or 1")
    if role != "assistant":
        if weight == 0:
            return None
        raise RecordProblem(
            f"{label} ({role}) has loss_weight {weight}; lmforge trains assistant messages only, so it cannot "
            "train this one (set it to 0 or remove it; data.train_on: everything trains on all the text)"
        )
    if weight not in (0, 1):
        raise RecordProblem(
            f"{label} (assistant) has loss_weight {weight}; lmforge trains a turn whole or not at all, every "
            "trained token weighing the same: expected 0 (not trained) or 1 (trained)"
        )
    return False if weight == 0 else None


def parse_tool_calls(value: Any, field: str) -> list[ToolCall]:
    """OpenAI tool calls ({"id", "type", "function": {"name", "arguments"}}) or flat {"name", "arguments"} ones."""
    if isinstance(value, dict):
        value = [value]
    calls = as_list(value, field)
    if not calls:
        raise RecordProblem(f"{field} is an empty list; expected at least one call {CALL_EXAMPLE}")
    return [tool_call(c, f"{field}[{i}]") for i, c in enumerate(calls)]


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
    if previous.role == "assistant":  # a tool result after a reply without calls: a call written in its text
        return ("tool",) if previous.tool_calls else ("user", "tool")
    return ("tool", "assistant")
