"""ShareGPT / FastChat conversations: a list of turns {from, value} (or {role, content}) with named roles.

Roles (renamed per dataset with `data.train[].tags`, as LLaMA-Factory's tags): human -> user, gpt ->
assistant, system -> system, function_call -> an assistant message with tool calls (the value is JSON
{"name", "arguments"} or a list of them), observation -> a tool result (after a function_call turn, or after
a gpt reply that wrote its call in its text, as LLaMA-Factory reads it). Where a tag is not set, the
usual synonyms are read too (user, assistant, tool). Turns spelled {role, content} are recognised by
their keys unless role_tag/content_tag are set.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lmforge.config.settings import Source
from lmforge.data.records import Message
from lmforge.data.sources.content import CALL_EXAMPLE, call_json
from lmforge.data.sources.messages import as_list, check_order, message_text, parse_tool_calls
from lmforge.data.sources.problems import EMPTY, MISSING, RecordProblem, kind_of
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.sources.row import Row

TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
ROLE_OF_TAG = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "assistant",
    "system_tag": "system",
}
SYNONYMS = {
    "user_tag": ("human", "user"),
    "assistant_tag": ("gpt", "assistant"),
    "observation_tag": ("observation", "tool"),
    "function_tag": ("function_call",),
    "system_tag": ("system",),
}
VARIANT_NAMES = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool"}


def check_tags(source: Source) -> None:
    unknown = [t for t in source.tags if t not in TAGS]
    if unknown:
        raise LmforgeError(
            f"{source.label()}: data.train[].tags has {unknown[0]!r}; expected keys among {', '.join(TAGS)}"
        )


def conversation(row: Row, end: str) -> list[Message]:
    """The turns as messages; `end` is "assistant" (a whole conversation) or "prompt" (a reply follows)."""
    field = row.field("conversations")
    turns = as_list(row.require("conversations"), field)
    if not turns:
        raise RecordProblem(f"{field} is an empty list; expected turns {row.fmt.example}", MISSING)
    keys = _keys(row.tags, turns[0])
    messages, labels, shown = [], [], []
    system = row.string("system", required=False)
    if system.strip():
        messages, labels, shown = [Message("system", system)], [row.field("system")], [_names(row.tags, keys)["system"]]
    for i, turn in enumerate(turns):
        label = f"{row.key('conversations')}[{i}]"
        messages.append(_turn(turn, label, keys, row.tags))
        labels.append(label)
        shown.append(str(turn[keys[0]]))
    names = _names(row.tags, keys)
    if end == "assistant":
        check_order(messages, labels, shown, names)
    else:
        check_order(
            [*messages, Message("assistant", "reply")],
            [*labels, "the chosen reply"],
            [*shown, names["assistant"]],
            names,
        )
    return messages


def reply(row: Row, canonical: str) -> Message:
    """A preference reply: a turn {from: gpt, value: ...} (or function_call) or a plain string."""
    value = row.require(canonical)
    field = row.field(canonical)
    if isinstance(value, str):
        if not value.strip():
            raise RecordProblem(f"{field} is empty; expected the assistant's reply text", EMPTY)
        return Message("assistant", value)
    keys = _keys(row.tags, value)
    message = _turn(value, field, keys, row.tags)
    if message.role != "assistant":
        raise RecordProblem(
            f"{field} has {keys[0]} {json.dumps(value[keys[0]])}; expected "
            f"{_names(row.tags, keys)['assistant']} (the reply)"
        )
    return message


def _keys(tags: dict[str, str], first: Any) -> tuple[str, str]:
    """(role key, content key): the tags', else {role, content} where the turns use them, else {from, value}."""
    if "role_tag" not in tags and isinstance(first, dict) and "from" not in first and "role" in first:
        return "role", tags.get("content_tag", "content")
    return tags.get("role_tag", TAGS["role_tag"]), tags.get("content_tag", TAGS["content_tag"])


def _roles(tags: dict[str, str]) -> dict[str, str]:
    """The data's role name -> its tag (user_tag, ...)."""
    roles: dict[str, str] = {}
    for tag, names in SYNONYMS.items():
        for name in (tags[tag],) if tag in tags else names:
            roles.setdefault(name, tag)
    return roles


def _names(tags: dict[str, str], keys: tuple[str, str]) -> dict[str, str]:
    """How to spell each canonical role in messages about this data."""

    def name(tag: str) -> str:
        if tag in tags:
            return tags[tag]
        return VARIANT_NAMES.get(tag, TAGS[tag]) if keys[0] == "role" else TAGS[tag]

    return {
        "user": name("user_tag"),
        "assistant": f"{name('assistant_tag')} or {name('function_tag')}",
        "tool": name("observation_tag"),
        "system": name("system_tag"),
    }


def _turn(turn: Any, label: str, keys: tuple[str, str], tags: dict[str, str]) -> Message:
    role_key, content_key = keys
    if not isinstance(turn, dict):
        raise RecordProblem(f'{label} is {kind_of(turn)}; expected an object with "{role_key}" and "{content_key}"')
    extra = [k for k, v in turn.items() if k not in keys and v is not None]
    if extra:
        raise RecordProblem(
            f'{label} has key "{extra[0]}", which lmforge does not read; expected only '
            f'"{role_key}" and "{content_key}" (OpenAI messages with tool_calls: use format: messages)'
        )
    role = turn.get(role_key)
    if role is None:
        raise RecordProblem(
            f'{label} has no "{role_key}"; expected an object with "{role_key}" and "{content_key}"', MISSING
        )
    roles = _roles(tags)
    tag = roles.get(role) if isinstance(role, str) else None
    if tag is None:
        raise RecordProblem(
            f"{label} has {role_key} {json.dumps(role)}; expected one of {', '.join(roles)} (set "
            "data.train[].tags if the data names its roles otherwise)"
        )
    value = turn.get(content_key)
    if value is None:
        raise RecordProblem(f'{label} has no "{content_key}"; expected the {role} turn\'s text', MISSING)
    if tag == "function_tag":
        calls = call_json(value, label, f"{CALL_EXAMPLE} or a list of them")
        return Message("assistant", "", tool_calls=parse_tool_calls(calls, f"{label} {role}"))
    text = message_text(value, label, role)
    if tag == "assistant_tag" and not text.strip():
        raise RecordProblem(f"{label} ({role}) has empty {content_key}; expected the reply text", EMPTY)
    return Message(ROLE_OF_TAG[tag], text)
