"""Canonical records every reader produces: conversations of role/content messages, and plain texts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Message:
    role: str  # system | user | assistant | tool
    content: str


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line", used in error messages

    def as_dicts(self) -> list[dict]:
        """The messages as apply_chat_template expects them."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass
class Text:
    text: str
    source: str = ""
