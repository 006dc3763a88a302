"""Where an assistant turn's labelled text ends in the training text: the reply as the template writes it and
the end-of-turn text after it (masks.py finds where it starts, at the end of the generation prompt).

A text reply ends with the first special token after it when it is rendered as the last message (e.g.
<|im_end|>, <|eot_id|>), or the text up to the next message, stripped, where the template's markers are
not special tokens; a tool-calling turn with its rendering as the last message. Each check that fails
raises a TurnError naming the template property, which masks.py turns into the message the user sees.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING

import jinja2

from lmforge.data.chat.reasoning import given_reasoning
from lmforge.data.chat.render import Renderer

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

# What tool-calling turns may have between the generation prompt and the calls: whitespace and a reasoning
# block (Qwen3 gives the last assistant turn an empty one). The model has to generate it, so it is labelled.
LEAD_IN = re.compile(r"\s*(?:<think>.*?</think>)?\s*", re.DOTALL)
_STOP_PATTERNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SPECIAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REPLY_ENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {template: end-of-turn text}


class TurnError(Exception):
    """A property of the template that failed for one assistant turn (turned into an LmforgeError)."""

    def __init__(self, prop: str, detail: str):
        super().__init__(f"{prop}: {detail}")
        self.prop, self.detail = prop, detail


def reply_end(tokenizer: Tokenizer, content: str, text: str, finished: str, start: int, last: bool) -> int:
    """End (in T) of a text reply and its end-of-turn text: the first place the reply follows a lead-in (see
    `lead_in_ends`) in F, the turn rendered as the last message, where it ends with a stop token after which
    F holds nothing else; and the same reply and stop in T. Tried first right after whitespace and a think block
    (most templates), then after every lead-in item."""
    try:
        return _reply_end(tokenizer, content, text, finished, start, last, False)
    except TurnError:
        return _reply_end(tokenizer, content, text, finished, start, last, True)


def _reply_end(
    tokenizer: Tokenizer, content: str, text: str, finished: str, start: int, last: bool, every: bool
) -> int:
    candidates = find_reply(tokenizer, text, start, content, every)
    if not candidates:
        dropped = " (it drops the reasoning of earlier turns)" if "</think>" in content else ""
        raise TurnError(
            "content not found",
            f"the reply does not follow the generation prompt as written: the "
            f"template changes or moves it{dropped}; after the prompt comes {text[start:][:80]!r}",
        )
    in_finished = candidates if last else find_reply(tokenizer, finished, start, content, every)
    if not in_finished:
        raise TurnError("content not found", "the reply is rendered differently when it is the last message")
    stop = ""
    for finished_end in in_finished:
        stop = end_of_turn(tokenizer, finished[finished_end:])
        if stop and not _holds_more(tokenizer, finished[finished_end + len(stop) :]):
            break
    if not stop:
        raise TurnError(
            "no stop token", "the template ends assistant turns with no stop token: the model would never learn to stop"
        )
    ends_at = next((end for end in candidates if text.startswith(stop, end)), None)
    if ends_at is None:
        ends_at = candidates[0]
        raise TurnError(
            "end of turn differs",
            f"the turn ends with {stop!r} when it is the last message "
            f"but with {text[ends_at : ends_at + len(stop) + 20]!r} in the whole conversation",
        )
    return ends_at + len(stop)


def _holds_more(tokenizer: Tokenizer, rest: str) -> bool:
    """Whether text after a turn's stop token is more than whitespace and special tokens."""
    return bool(stop_pattern(tokenizer).sub("", rest).strip())


def tool_call_end(renderer: Renderer, message: dict, text: str, finished: str, start: int) -> int:
    """End (in T) of a tool-calling turn: its rendering as the last message, through its last stop token."""
    body = finished[LEAD_IN.match(finished, start).end() :].rstrip()
    missing = [name for name in called_names(message) if name not in body]
    if missing:
        raise TurnError(
            "tool calls not rendered", f"the call to {missing[0]!r} is missing from the rendered turn {body[:80]!r}"
        )
    stops = list(stop_pattern(renderer.tokenizer).finditer(body))
    if not (stops and stops[-1].end() == len(body)) and not _ends_like_a_reply(renderer, body):
        raise TurnError(
            "no stop token",
            f"the tool-calling turn {body[-60:]!r} ends neither with a stop token nor "
            "as text replies end: the model would never learn to stop",
        )
    begin = LEAD_IN.match(text, start).end()
    if not text.startswith(body, begin):
        raise TurnError(
            "content not found",
            "the tool-calling turn is rendered differently when it is the last "
            f"message; in the whole conversation it reads {text[begin : begin + 80]!r}",
        )
    return begin + len(body)


def _ends_like_a_reply(renderer: Renderer, body: str) -> bool:
    """Whether `body` ends with the end-of-turn text a plain reply gets (markers that are not special tokens)."""
    tokenizer, template = renderer.tokenizer, renderer.template
    ends = _REPLY_ENDS.setdefault(tokenizer, {})
    if template not in ends:
        probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "REPLY"}]
        try:
            rendered = renderer.render(renderer.prepare(probe))
            ends[template] = end_of_turn(tokenizer, rendered[rendered.rindex("REPLY") + 5 :])
        except (jinja2.TemplateError, TypeError, ValueError):
            ends[template] = ""
    return bool(ends[template]) and body.endswith(ends[template])


def called_names(message: dict) -> list[str]:
    return [call.get("function", call)["name"] for call in message.get("tool_calls") or []]


def check_reasoning_kept(message: dict, labelled: str) -> None:
    """A turn that carries reasoning must be trained with it; templates that drop it need per-turn samples."""
    reasoning = given_reasoning(message).strip()
    if reasoning and reasoning not in labelled:
        raise TurnError("reasoning dropped", "the turn's reasoning is missing from the training text")


def find_reply(tokenizer: Tokenizer, text: str, start: int, content: str, every: bool = True) -> list[int]:
    """The possible ends of the reply in `text` when it follows `start` after a lead-in, first first (with
    `every` False, only where it follows whitespace and a think block)."""
    if not content.strip():  # an empty reply: after whitespace and a think block
        return [LEAD_IN.match(text, start).end()]
    needles = [content.lstrip(), content.strip()]  # templates keep the text as it is, or trim it
    reasoning, _, answer = content.rpartition("</think>")
    reasoning = reasoning.replace("<think>", "").strip()
    ends = []
    for begin in lead_in_ends(tokenizer, text, start) if every else [LEAD_IN.match(text, start).end()]:
        lead = text[start:begin]
        # reasoning written into the content: the template may have moved it into the lead-in
        moved = [answer.strip()] if "</think>" in content and "</think>" in lead and reasoning in lead else []
        ends.extend(begin + len(n) for n in dict.fromkeys(needles + moved) if n and text.startswith(n, begin))
    return list(dict.fromkeys(ends))


_SPACE_OR_THINK = re.compile(r"\s+|<think>.*?</think>", re.DOTALL)
_HEADER_WORD = re.compile(r"[A-Za-z_][\w.=: -]{0,40}?(?=<)")


def lead_in_ends(tokenizer: Tokenizer, text: str, start: int) -> list[int]:
    """Where a reply may begin after `start`: after each item of a lead-in the model generates before it:
    whitespace, a think block (Qwen3 gives the last turn an empty one), special tokens, and header words
    between special tokens (harmony's `<|channel|>final<|message|>`)."""
    special = stop_pattern(tokenizer)
    ends, pos, after_special = [start], start, False
    while pos < len(text):
        item = _SPACE_OR_THINK.match(text, pos) or special.match(text, pos)
        if item is None and after_special:
            word = _HEADER_WORD.match(text, pos)
            item = word if word is not None and special.match(text, word.end()) else None
        if item is None or item.end() == pos:
            break
        after_special = item.re is special
        pos = item.end()
        ends.append(pos)
    return ends


def end_of_turn(tokenizer: Tokenizer, suffix: str) -> str:
    """What ends a reply: the text after it through the first special token, else the text stripped."""
    match = stop_pattern(tokenizer).search(suffix)
    return suffix[: match.end()] if match else suffix.rstrip()


def stop_pattern(tokenizer: Tokenizer) -> re.Pattern:
    """Regex of the tokenizer's special tokens, longest first; built once per tokenizer (thousands in some)."""
    pattern = _STOP_PATTERNS.get(tokenizer)
    if pattern is None:
        alternatives = "|".join(re.escape(t) for t in sorted(special_tokens(tokenizer), key=len, reverse=True))
        pattern = re.compile(alternatives or r"(?!)")
        _STOP_PATTERNS[tokenizer] = pattern
    return pattern


def special_tokens(tokenizer: Tokenizer) -> frozenset[str]:
    """The strings of the tokenizer's special tokens (its named ones and added tokens marked special), read once."""
    tokens = _SPECIAL.get(tokenizer)
    if tokens is None:
        found = set(tokenizer.all_special_tokens)
        found |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        found.discard("")
        tokens = _SPECIAL[tokenizer] = frozenset(found)
    return tokens
