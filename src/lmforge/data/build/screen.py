"""What every record is checked for before it is encoded, where it is read (this process, or stream.py's reading
processes); the counts go into the data report.

- Text longer than any sample can reach is cut. Past CHARS_PER_TOKEN characters per token of max_length, a
  message's text can only lie beyond max_length tokens, where every sample is cut or dropped anyway (the
  truncation policy decides the same with or without it), so tokenising it would only cost memory (~100 bytes
  a character: ~8 GB for a 50 MB message) and time. A reply with reasoning keeps each part (the reasoning before
  `</think>`, the answer after it) up to the bound, since templates render them apart. Pretraining texts are
  not cut: every token of them is trained (text.py tokenises long ones in slices instead).
- Special-token strings typed in the text (control_tokens.py): the records holding each are counted, and
  where the first one is.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmforge.data.chat.control_tokens import special_strings
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Record, Text

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

# Characters per token beyond which no text can fit max_length: more than tokenizers average over a long text
# (~4 for English prose, ~3 for code, ~1 to 2 for Chinese), so a cut text still fills max_length.
CHARS_PER_TOKEN = 32
REASONING_END = "</think>"


@dataclass
class Screened:
    """What screening found in a run of records."""

    cut: int = 0  # records with text cut at the bound
    special: Counter = field(default_factory=Counter)  # special-token string -> records holding it
    special_records: int = 0
    special_at: str | None = None  # where the first record holding one is (file:line)

    def add(self, other: Screened) -> Screened:
        self.cut += other.cut
        self.special.update(other.special)
        self.special_records += other.special_records
        self.special_at = self.special_at or other.special_at
        return self


def char_bound(max_length: int) -> int:
    """The most characters of one text that can reach a sample of max_length tokens."""
    return CHARS_PER_TOKEN * max_length


def screen(tokenizer: Tokenizer, records: list[Record], max_length: int) -> Screened:
    """Cut the records' over-long texts in place and count the special-token strings in them (module docstring)."""
    out = Screened()
    bound = char_bound(max_length)
    for record in records:
        if isinstance(record, Text):
            texts = [record.text]
        else:
            messages = _messages(record)
            shortened = [_bounded(m, bound) for m in messages]
            if any(new is not old for new, old in zip(shortened, messages)):
                out.cut += 1
                _replace_messages(record, shortened)
            texts = [t for m in shortened for t in (m.content, m.reasoning) if t]
        found = list(dict.fromkeys(s for text in texts for s in special_strings(tokenizer, text)))  # in order
        if found:
            out.special.update(found)
            out.special_records += 1
            out.special_at = out.special_at or record.source
    return out


def cut_text(text: str, bound: int) -> str:
    """`text` within `bound` characters; with reasoning (`...</think>answer`), each part within it."""
    if len(text) <= bound:
        return text
    reasoning, end, answer = text.rpartition(REASONING_END)
    return reasoning[:bound] + end + answer[:bound] if end else text[:bound]


def _bounded(message: Message, bound: int) -> Message:
    """The message itself when its text is within the bound, else a copy with it cut."""
    content = cut_text(message.content, bound) if message.content else message.content
    reasoning = cut_text(message.reasoning, bound) if message.reasoning else message.reasoning
    if content is message.content and reasoning is message.reasoning:
        return message
    return dataclasses.replace(message, content=content, reasoning=reasoning)


def _messages(record: Record) -> list[Message]:
    if isinstance(record, Conversation):
        return record.messages
    if isinstance(record, PreferencePair):
        return [*record.prompt, record.chosen, record.rejected]
    if isinstance(record, KTOExample):
        return [*record.prompt, record.completion]
    raise TypeError(f"not a record: {type(record).__name__}")


def _replace_messages(record: Record, messages: list[Message]) -> None:
    if isinstance(record, Conversation):
        record.messages = messages
    elif isinstance(record, PreferencePair):
        *record.prompt, record.chosen, record.rejected = messages
    else:
        *record.prompt, record.completion = messages
