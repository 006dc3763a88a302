"""Input formats: how one row of each becomes a canonical record (records.py) of the kind a stage reads.

A format is a name, the canonical columns each record kind's parser reads, the keys that give it away per
record kind (for `format: auto`) and a parser per kind (what becomes of the keys it does not read: keys.py).
`data.train[].columns` maps a canonical column to the key the data uses ({instruction: question}); `tags`
renames sharegpt roles. Parsers raise RecordProblem naming the field (as the data spells it) and what was
expected; the reader adds file:line.

Kinds: text (Text), conversation (Conversation), preference (PreferencePair), kto (KTOExample).
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.config.settings import Source
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Record, Text
from lmforge.data.sources import sharegpt
from lmforge.data.sources.messages import as_list, check_order, parse_message, parse_messages, parse_tools
from lmforge.data.sources.problems import BAD_VALUE, EMPTY, MISSING, RecordProblem, UnknownFormat, kind_of
from lmforge.data.sources.row import Format, Row
from lmforge.errors import LmforgeError

LABEL_WORDS = {"true": True, "false": False, "1": True, "0": False}
# (format, kind) read only when data.train[].format names the format, and what such a record becomes
ASKED = {("alpaca", "text"): "each record one document: instruction, input and output joined by newlines"}


# -- text and messages ---------------------------------------------------------------------------------------


def _text(row: Row) -> Text:
    text = row.require("text")
    if not isinstance(text, str):
        raise RecordProblem(f"{row.field('text')} is {kind_of(text)}; expected a string")
    if not text.strip():
        raise RecordProblem(f"{row.field('text')} is empty; expected the document text", EMPTY)
    return Text(text=text)


def _messages(row: Row) -> Conversation:
    messages = parse_messages(row.require("messages"), row.field("messages"), "message")
    check_order(messages, [f"message {i}" for i in range(len(messages))])
    return Conversation(messages=messages, tools=parse_tools(row.get("tools"), row.field("tools")))


# -- preference and KTO: prompt + replies as strings, messages or message lists ------------------------------


def _prompt(row: Row) -> tuple[list[Message], list[str]]:
    """The `prompt` column: a string (one user message) or a message list; ([], []) when absent."""
    value = row.get("prompt")
    if value is None:
        return [], []
    if isinstance(value, str):
        if not value.strip():
            raise RecordProblem(f"{row.field('prompt')} is empty; expected the prompt text or messages")
        return [Message("user", value)], [row.field("prompt")]
    messages = parse_messages(value, row.field("prompt"), "prompt message")
    return messages, [f"prompt message {i}" for i in range(len(messages))]


def _reply(row: Row, canonical: str) -> tuple[list[Message], Message]:
    """(messages before the reply, the assistant reply) from a string, a message or a message list."""
    value = row.require(canonical)
    field = row.field(canonical)
    if isinstance(value, str):  # always the reply's text, even when it starts with "["
        if not value.strip():
            raise RecordProblem(f"{field} is empty; expected the assistant's reply text", EMPTY)
        return [], Message("assistant", value)
    if isinstance(value, dict):
        messages = [parse_message(value, field)]
    else:
        messages = parse_messages(value, field, f"{canonical} message")
    if messages[-1].role != "assistant":
        raise RecordProblem(f"the last message of {field} has role {messages[-1].role}; expected assistant (the reply)")
    if messages[-1].trained is False:
        raise RecordProblem(
            f"the last message of {field} has loss_weight 0, but it is the reply that preference and KTO "
            "training score, so it cannot be left untrained; remove its loss_weight (or the record)"
        )
    return messages[:-1], messages[-1]


def _with_prefix(prompt: list[Message], labels: list[str], prefix: list[Message], side: str):
    return [*prompt, *prefix], [*labels, *(f"{side} message {i}" for i in range(len(prefix)))]


def _preference(row: Row) -> PreferencePair:
    prompt, labels = _prompt(row)
    chosen_prefix, chosen = _reply(row, "chosen")
    rejected_prefix, rejected = _reply(row, "rejected")
    if chosen_prefix != rejected_prefix:
        raise RecordProblem(
            f"{row.field('chosen')} and {row.field('rejected')} differ before their last message; "
            "expected the same conversation with a different last (assistant) reply"
        )
    prompt, labels = _with_prefix(prompt, labels, chosen_prefix, "chosen")
    _check_prompt(row, prompt, labels, chosen, "the chosen reply")
    return PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected, tools=parse_tools(row.get("tools"), row.field("tools"))
    )


def _kto(row: Row) -> KTOExample:
    prompt, labels = _prompt(row)
    prefix, completion = _reply(row, "completion")
    prompt, labels = _with_prefix(prompt, labels, prefix, "completion")
    _check_prompt(row, prompt, labels, completion, "the completion")
    return KTOExample(prompt=prompt, completion=completion, label=kto_label(row))


def _check_prompt(row: Row, prompt: list[Message], labels: list[str], reply: Message, reply_label: str) -> None:
    if not prompt:
        raise RecordProblem(
            f"no {row.field('prompt')} key and no earlier messages in the replies; expected format "
            f"{row.fmt.name}: {row.fmt.example}",
            MISSING,
        )
    check_order([*prompt, reply], [*labels, reply_label])


def kto_label(row: Row) -> bool:
    """A boolean (CSV cells: true/false/1/0)."""
    value = row.require("label")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABEL_WORDS:
        return LABEL_WORDS[value.strip().lower()]
    raise RecordProblem(
        f"{row.field('label')} is {json.dumps(value)}; expected true (desirable) or false (undesirable)", BAD_VALUE
    )


# -- alpaca ----------------------------------------------------------------------------------------------------


def _alpaca_prompt(row: Row) -> list[Message]:
    messages = []
    system = row.string("system", required=False)
    if system.strip():
        messages.append(Message("system", system))
    history = row.get("history")
    for i, pair in enumerate(as_list(history, row.field("history")) if history not in (None, "") else []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise RecordProblem(
                f"{row.field('history')}[{i}] is {kind_of(pair)}; expected a [user, assistant] pair of strings"
            )
        if not pair[1].strip():
            raise RecordProblem(
                f"{row.field('history')}[{i}] has an empty assistant reply; expected the reply text", EMPTY
            )
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    instruction = row.string("instruction")
    extra = row.string("input", required=False)
    user = "\n".join(t for t in (instruction, extra) if t.strip())
    if not user:
        raise RecordProblem(f"{row.field('instruction')} and {row.field('input')} are empty; expected the task text")
    return [*messages, Message("user", user)]


def _alpaca(row: Row) -> Conversation:
    return Conversation(
        messages=[*_alpaca_prompt(row), Message("assistant", row.string("output", reply=True))],
        tools=parse_tools(row.get("tools"), row.field("tools")),
    )


def _alpaca_preference(row: Row) -> PreferencePair:
    return PreferencePair(
        prompt=_alpaca_prompt(row),
        chosen=Message("assistant", row.string("chosen", reply=True)),
        rejected=Message("assistant", row.string("rejected", reply=True)),
        tools=parse_tools(row.get("tools"), row.field("tools")),
    )


def _alpaca_text(row: Row) -> Text:
    """A pretraining document: instruction, input and output joined by newlines, the empty ones left out
    (LLaMA-Factory joins instruction and input so, and leaves the output out; here it is part of the text)."""
    for canonical, what in (("system", "a system prompt"), ("history", "earlier turns")):
        if row.get(canonical) not in (None, "", []):
            raise RecordProblem(
                f"{row.field(canonical)} holds {what}: a conversation, not a document; pretraining reads "
                "instruction, input and output as one text, so train this data with stage sft, or remove the key"
            )
    parts = [row.string("instruction"), row.string("input", required=False), row.string("output", required=False)]
    text = "\n".join(part for part in parts if part)
    if not text.strip():
        raise RecordProblem(
            f"{row.field('instruction')}, {row.field('input')} and {row.field('output')} are empty; expected the "
            "document text",
            EMPTY,
        )
    return Text(text=text)


def _alpaca_kto(row: Row) -> KTOExample:
    return KTOExample(
        prompt=_alpaca_prompt(row),
        completion=Message("assistant", row.string("output", reply=True)),
        label=kto_label(row),
    )


# -- sharegpt (parsing of the turns lives in sharegpt.py) ------------------------------------------------------


def _sharegpt(row: Row) -> Conversation:
    messages = sharegpt.conversation(row, end="assistant")
    return Conversation(messages=messages, tools=parse_tools(row.get("tools"), row.field("tools")))


def _sharegpt_preference(row: Row) -> PreferencePair:
    prompt = sharegpt.conversation(row, end="prompt")
    return PreferencePair(
        prompt=prompt,
        chosen=sharegpt.reply(row, "chosen"),
        rejected=sharegpt.reply(row, "rejected"),
        tools=parse_tools(row.get("tools"), row.field("tools")),
    )


def _sharegpt_kto(row: Row) -> KTOExample:
    messages = sharegpt.conversation(row, end="assistant")
    return KTOExample(prompt=messages[:-1], completion=messages[-1], label=kto_label(row))


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "messages",
            {
                "conversation": ("messages", "tools"),
                "preference": ("prompt", "chosen", "rejected", "tools"),
                "kto": ("prompt", "completion", "label"),
            },
            {"conversation": ("messages",), "preference": ("chosen_messages", "rejected_messages")},
            {"conversation": _messages, "preference": _preference, "kto": _kto},
            '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}',
            {"chosen": "chosen_messages", "rejected": "rejected_messages"},  # LLaMA-Factory's newer pairs
        ),
        Format(
            "sharegpt",
            {
                "conversation": ("conversations", "system", "tools"),
                "preference": ("conversations", "system", "tools", "chosen", "rejected"),
                "kto": ("conversations", "system", "label"),
            },
            {
                "conversation": ("conversations",),
                "preference": ("conversations", "chosen"),
                "kto": ("conversations", "label"),
            },
            {"conversation": _sharegpt, "preference": _sharegpt_preference, "kto": _sharegpt_kto},
            '{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}',
        ),
        Format(
            "alpaca",
            {
                "conversation": ("instruction", "input", "output", "system", "history", "tools"),
                "preference": ("instruction", "input", "system", "history", "tools", "chosen", "rejected"),
                "kto": ("instruction", "input", "output", "system", "history", "label"),
                "text": ("instruction", "input", "output", "system", "history"),
            },
            {
                "conversation": ("instruction",),
                "preference": ("instruction", "chosen"),
                "kto": ("instruction", "label"),
            },  # not told for text: pretraining on alpaca records is asked for with format: alpaca
            {"conversation": _alpaca, "preference": _alpaca_preference, "kto": _alpaca_kto, "text": _alpaca_text},
            '{"instruction": ..., "input": ..., "output": ...}',
        ),
        Format("text", {"text": ("text",)}, {"text": ("text",)}, {"text": _text}, '{"text": ...}'),
        Format(
            "preference",
            {"preference": ("prompt", "chosen", "rejected", "tools")},
            {"preference": ("chosen", "rejected")},
            {"preference": _preference},
            '{"prompt": ..., "chosen": ..., "rejected": ...}',
        ),
        Format(
            "kto",
            {"kto": ("prompt", "completion", "label")},
            {"kto": ("completion", "label")},
            {"kto": _kto},
            '{"prompt": ..., "completion": ..., "label": true}',
        ),
    )
}


def check_source(source: Source, fmt: Format, kind: str) -> None:
    """Config errors, raised once per source: a format that cannot give `kind`, unknown columns or tags."""
    if kind not in fmt.parsers:
        wanted = [f.name for f in FORMATS.values() if kind in f.parsers]
        raise LmforgeError(
            f"{source.label()}: format {fmt.name} gives {' or '.join(fmt.parsers)} records, but "
            f"{kind} records are needed here; expected format {' or '.join(wanted)} (or change `stage`)"
        )
    unknown = [k for k in source.columns if k not in fmt.columns]
    if unknown:
        raise LmforgeError(
            f"{source.label()}: data.train[].columns maps {unknown[0]!r}, which format {fmt.name} "
            f"does not read; expected keys among {', '.join(fmt.columns)}"
        )
    if source.tags and fmt.name != "sharegpt":
        raise LmforgeError(f"{source.label()}: data.train[].tags applies to sharegpt data, not {fmt.name}")
    sharegpt.check_tags(source)


def detect(obj: dict[str, Any], source: Source, kind: str) -> Format:
    """The first format whose telling keys the record has; a format of the wrong kind is a config error."""

    def has(fmt: Format, keys: tuple[str, ...]) -> bool:
        mapped_elsewhere = any(k not in fmt.columns for k in source.columns)  # {conversations: messages} -> sharegpt
        return bool(keys) and not mapped_elsewhere and all(source.columns.get(k, k) in obj for k in keys)

    for fmt in FORMATS.values():
        if has(fmt, fmt.detect.get(kind, ())):
            check_source(source, fmt, kind)
            return fmt
    for fmt in FORMATS.values():
        if any(has(fmt, keys) for keys in fmt.detect.values()):
            check_source(source, fmt, kind)
            raise UnknownFormat(
                f"the keys {', '.join(obj)} look like format {fmt.name}, which gives {kind} records only when "
                f"asked: set data.train[].format: {fmt.name} ({ASKED[fmt.name, kind]})"
            )
    known = "; ".join(f"{f.name} ({f.example})" for f in FORMATS.values() if kind in f.parsers)
    raise UnknownFormat(
        f"cannot tell the format from the keys {', '.join(obj) or '(none)'}; expected one of: "
        f"{known}. Set data.train[].format (and columns, if the keys have other names)"
    )


def parse(obj: dict[str, Any], fmt: Format, source: Source, kind: str) -> Record:
    return fmt.parsers[kind](Row(obj, fmt, source.columns, source.tags))
