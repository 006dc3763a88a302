"""The data layer's input contract: the canonical records every reader produces (conversations, preference pairs,
KTO examples, plain texts), and which kind of record each stage reads.

Readers turn any input format into these; templates, masks and the encoders only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a JSON object, or the raw string when the source holds one
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """OpenAI shape, which HF chat templates read (`tool_call.function.name` / `.arguments`)."""
        out: dict[str, Any] = {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        if self.id is not None:
            out["id"] = self.id
        return out


@dataclass
class Message:
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: list[ToolCall] | None = None  # assistant messages that call tools
    tool_call_id: str | None = None  # tool results: which call they answer
    name: str | None = None  # tool results: the tool's name
    reasoning: str | None = None  # assistant reasoning kept apart from the reply (templates' reasoning_content)
    # Whether this assistant turn carries loss: None lets data.train_on decide; False never labels it (e.g.
    # LLaMA-Factory's per-message loss_weight 0). Not passed to the template.
    trained: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        if self.reasoning is not None:
            out["reasoning_content"] = self.reasoning
        return out


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line", used in error messages
    tools: list[dict[str, Any]] | None = None  # JSON schemas of the tools offered, passed to the template

    def as_dicts(self) -> list[dict]:
        """The messages as apply_chat_template expects them."""
        return [m.as_dict() for m in self.messages]


@dataclass
class PreferencePair:
    """A prompt conversation (ending with a user turn) and two candidate assistant replies."""

    prompt: list[Message]
    chosen: Message
    rejected: Message
    source: str = ""
    tools: list[dict[str, Any]] | None = None

    def conversation(self, side: str) -> Conversation:
        reply = self.chosen if side == "chosen" else self.rejected
        return Conversation(messages=[*self.prompt, reply], source=self.source, tools=self.tools)


@dataclass
class KTOExample:
    """An unpaired completion labelled desirable (True) or undesirable (False)."""

    prompt: list[Message]
    completion: Message
    label: bool
    source: str = ""

    def conversation(self) -> Conversation:
        return Conversation(messages=[*self.prompt, self.completion], source=self.source)


@dataclass
class Text:
    text: str
    source: str = ""


Record = Conversation | PreferencePair | KTOExample | Text

KINDS = ("text", "conversation", "preference", "kto")
KIND_BY_STAGE = {
    "pt": "text",
    "sft": "conversation",
    "rm": "preference",
    "dpo": "preference",
    "simpo": "preference",
    "orpo": "preference",
    "kto": "kto",
}
