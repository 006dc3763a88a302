"""Token ids and loss labels for one conversation, derived from its Jinja chat template.

The template is the only description of the format: nothing here knows a model family. For each
assistant turn i the conversation is rendered three ways,

    T   = render(all messages)                              the training text
    P_i = render(messages[:i], add_generation_prompt=True)  what the model sees at inference
    F_i = render(messages[:i+1])                            the turn rendered as the last one

and the labelled characters of turn i run from the end of P_i (which must be a prefix of T) through
the reply and its end-of-turn text: the part of F_i after the reply up to and including the first
special token (e.g. <|im_end|>, <|eot_id|>, </s>). T is tokenised once with offsets, and a token is
labelled when its characters overlap a labelled span. Where the template marks replies with
{% generation %}, transformers' assistant mask must agree token for token. Whatever property fails
stops the run with a message: a silently wrong mask trains a wrong model.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import jinja2

from lmforge.data.records import Conversation
from lmforge.data.templates import builtin_names
from lmforge.errors import LmforgeError

IGNORE_INDEX = -100

# What may stand between the generation prompt and the reply: whitespace and a reasoning block
# (Qwen3 gives the last assistant turn an empty one). The model has to generate it, so it is labelled.
_LEAD_IN = re.compile(r"\s*(?:<think>.*?</think>)?\s*", re.DOTALL)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_STOP_PATTERNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    text: str


class _TurnError(Exception):
    """A property of the template that failed for one assistant turn (turned into an LmforgeError)."""

    def __init__(self, prop: str, detail: str):
        super().__init__(f"{prop}: {detail}")
        self.prop, self.detail = prop, detail


def encode_conversation(tokenizer, template: str, conv: Conversation) -> Encoded:
    """input_ids of the rendered conversation and labels on each assistant reply plus its end of turn.

    A conversation without an assistant turn comes back with every label IGNORE_INDEX; the caller
    decides whether to drop (and count) it.
    """
    messages = conv.as_dicts()
    if not messages:
        raise LmforgeError(f"{_where(conv)}: the conversation has no messages; remove the record")
    if messages[0]["role"] == "assistant":
        raise LmforgeError(f"{_where(conv)}: the conversation opens with an assistant message, which has no prompt "
                           "to learn from; drop that message or put a user message before it")
    text = _render(tokenizer, template, messages, conv)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            spans.append(_assistant_span(tokenizer, template, messages, i, text, conv))
        except _TurnError as err:
            raise _turn_error(conv, messages, i, err) from None
    input_ids, offsets = _tokenize(tokenizer, text, conv)
    labels = _label_tokens(text, input_ids, offsets, spans, conv)
    if _GENERATION_TAG.search(template):
        _cross_check(tokenizer, template, messages, input_ids, labels, conv)
    return Encoded(input_ids=input_ids, labels=labels, text=text)


def generation_prompt(tokenizer, template: str, messages: list[dict]) -> str:
    """The prompt text the model continues at inference: the messages plus the assistant header."""
    return _render(tokenizer, template, messages, None, add_generation_prompt=True)


def _assistant_span(tokenizer, template: str, messages: list[dict], i: int, text: str, conv) -> tuple[int, int]:
    """Character span [start, end) of T that the model must generate for assistant message i."""
    prompt = _render(tokenizer, template, messages[:i], conv, add_generation_prompt=True)
    if not text.startswith(prompt):
        raise _TurnError("prefix property failed", "the generation prompt is not a prefix of the training text, "
                         "so the model would be trained on a context it never sees at inference "
                         f"({_diff(prompt, text)})")
    content = messages[i]["content"]
    reply_end = _find_reply(text, len(prompt), content)
    if reply_end is None:
        dropped = " (it drops the reasoning of earlier turns)" if "</think>" in content else ""
        raise _TurnError("content not found", f"the reply does not follow the generation prompt as written: the "
                         f"template changes or moves it{dropped}; after the prompt comes {text[len(prompt):][:80]!r}")
    last = i == len(messages) - 1
    finished = text if last else _render(tokenizer, template, messages[: i + 1], conv)
    finished_end = reply_end if last else _find_reply(finished, len(prompt), content)
    if finished_end is None:
        raise _TurnError("content not found", "the reply is rendered differently when it is the last message")
    end_of_turn = _end_of_turn(tokenizer, finished[finished_end:])
    if not end_of_turn:
        raise _TurnError("no stop token", "the template ends assistant turns with no stop token: the model would "
                         "never learn to stop")
    if not text.startswith(end_of_turn, reply_end):
        raise _TurnError("end of turn differs", f"the turn ends with {end_of_turn!r} when it is the last message "
                         f"but with {text[reply_end:reply_end + len(end_of_turn) + 20]!r} in the whole conversation")
    return len(prompt), reply_end + len(end_of_turn)


def _find_reply(text: str, start: int, content: str) -> int | None:
    """End of the reply in `text` when it follows `start` after only whitespace or a think block."""
    begin = _LEAD_IN.match(text, start).end()
    stripped = content.strip()
    if not stripped:  # an empty reply: the lead-in has eaten any whitespace it held
        return begin
    needles = [content.lstrip(), stripped]  # templates keep the text as it is, or trim it
    if "</think>" in content:  # reasoning written into the content: the template may have moved it into the lead-in
        reasoning, _, answer = content.rpartition("</think>")
        reasoning = reasoning.replace("<think>", "").strip()
        if "</think>" in text[start:begin] and reasoning in text[start:begin]:
            needles.append(answer.strip())
    for needle in needles:
        if text.startswith(needle, begin):
            return begin + len(needle)
    return None


def _end_of_turn(tokenizer, suffix: str) -> str:
    """What ends a reply: the text after it through the first special token, else the text stripped."""
    match = _stop_pattern(tokenizer).search(suffix)
    return suffix[: match.end()] if match else suffix.rstrip()


def _stop_pattern(tokenizer) -> re.Pattern:
    """Regex of the tokenizer's special tokens, longest first; built once per tokenizer (thousands in some)."""
    pattern = _STOP_PATTERNS.get(tokenizer)
    if pattern is None:
        tokens = set(tokenizer.all_special_tokens)
        tokens |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        tokens.discard("")
        alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        pattern = re.compile(alternatives or r"(?!)")
        _STOP_PATTERNS[tokenizer] = pattern
    return pattern


def _tokenize(tokenizer, text: str, conv) -> tuple[list[int], list[tuple[int, int]]]:
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise LmforgeError(f"{_where(conv)}: masks need character offsets, which this tokenizer cannot give "
                           f"({err}); use a fast (tokenizers-backed) tokenizer") from None
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _label_tokens(text: str, input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]],
                  conv) -> list[int]:
    """Label each token whose characters overlap a span, and check the labelled tokens cover every span."""
    labels = [IGNORE_INDEX] * len(input_ids)
    k = 0
    for span_start, span_end in spans:
        while k < len(offsets) and offsets[k][1] <= span_start:
            k += 1
        first, reach = k, span_start
        while k < len(offsets) and offsets[k][0] < span_end:
            labels[k] = input_ids[k]
            reach = max(reach, offsets[k][1])
            k += 1
        if reach < span_end:
            raise LmforgeError(f"{_where(conv)}: the tokenizer's character offsets do not cover the reply at "
                               f"characters {span_start}-{span_end} (offsets stop at {reach}); the mask cannot be "
                               "derived for this tokenizer")
        if text[offsets[first][0]:span_start].strip():  # a token holding prompt text besides whitespace
            raise LmforgeError(
                f"{_where(conv)}: token boundary: the token {text[offsets[first][0]:offsets[first][1]]!r} joins the "
                "end of the generation prompt to the reply, so the model would be trained to write part of its "
                "prompt. Remove the reply's leading whitespace, or choose a template whose markers are special "
                "tokens of this tokenizer with model.chat_template"
            )
    return labels


def _cross_check(tokenizer, template: str, messages: list[dict], input_ids: list[int], labels: list[int], conv):
    """Compare with the assistant mask transformers derives from the template's {% generation %} blocks."""
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    if list(out["input_ids"]) != input_ids:
        raise LmforgeError(f"{_where(conv)}: apply_chat_template tokenises the conversation differently from the "
                           "rendered text; the mask cannot be cross-checked for this tokenizer")
    theirs = [bool(m) for m in out["assistant_masks"]]
    ours = [label != IGNORE_INDEX for label in labels]
    if theirs != ours:
        bad = next(k for k, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        raise LmforgeError(
            f"{_where(conv)}: the template's {{% generation %}} blocks mark other tokens than the derived mask, first "
            f"at token {bad} ({tokenizer.decode(input_ids[max(bad - 3, 0):bad + 3])!r}); the generation blocks should "
            "hold exactly each reply and its end-of-turn token. Fix the template or choose another with "
            f"model.chat_template (built-ins: {builtin_names()})"
        )


def _render(tokenizer, template: str, messages: list[dict], conv, add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except jinja2.TemplateError as err:
        where = _where(conv) if conv is not None else "chat"
        raise LmforgeError(
            f"{where}: the chat template rejects this conversation: {err}. Fix the record, or choose a template "
            f"that accepts it with model.chat_template (built-ins: {builtin_names()})"
        ) from None


def _turn_error(conv: Conversation, messages: list[dict], i: int, err: _TurnError) -> LmforgeError:
    turn = sum(1 for m in messages[:i] if m["role"] == "assistant")
    return LmforgeError(
        f"{_where(conv)}: assistant turn {turn} (message {i}): {err.prop}: {err.detail}. The mask cannot be "
        f"derived exactly for this template; choose another with model.chat_template (built-ins: {builtin_names()}) "
        "or drop the record (a one-sample-per-turn policy for such templates is planned)"
    )


def _diff(prompt: str, text: str) -> str:
    at = next((k for k, (a, b) in enumerate(zip(prompt, text)) if a != b), min(len(prompt), len(text)))
    return f"at character {at} the prompt has {prompt[at:at + 40]!r}, the training text {text[at:at + 40]!r}"


def _where(conv: Conversation) -> str:
    return conv.source or "conversation"
