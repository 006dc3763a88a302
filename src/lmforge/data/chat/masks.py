"""Token ids and loss labels for one conversation, derived from its Jinja chat template.

The template is the only description of the format: nothing here knows a model family. For each
assistant turn i the conversation is rendered three ways,

    T   = render(all messages)                              the training text
    P_i = render(messages[:i], add_generation_prompt=True)  what the model sees at inference
    F_i = render(messages[:i+1])                            the turn rendered as the last one

and the labelled characters of turn i run from the end of P_i (which must be a prefix of T) through
the reply and its end-of-turn text: the part of F_i after the reply up to and including the first
special token (e.g. <|im_end|>, <|eot_id|>, </s>; found by turn_ends.py). Between the prompt and the reply
the model may write a lead-in (whitespace, a think block, harmony's `<|channel|>final<|message|>`): labelled.

Tokens: T is tokenised once with offsets (spans.py), and a token is labelled when its characters overlap a
labelled span. The rule is at the token level: the ids before each labelled turn must be exactly the ids
of P_i tokenised on its own (what the model reads at inference): they are where P_i ends on a token boundary
of T (drafts.py says why), else P_i is tokenised and compared. Where they differ (on byte-level
vocabularies a reply opening with a newline merges with the prompt's final newline into one token), a
sample with one labelled turn is the prompt's own tokens followed by the rest tokenised apart; a whole
conversation becomes one sample per turn (split_turns auto; `never` refuses).

Reasoning templates (reasoning.py): where the template leaves the turn's reasoning to the model (DeepSeek-R1's
generation prompt opens a think block the rendered turn never has; gpt-oss renders no analysis channel), the
turn is P_i followed by what the model writes, reasoning included, and the history as the template renders it:
one sample per turn. A message marked `trained=False` is never labelled. Where the template marks replies
with {% generation %}, transformers' assistant mask must agree token for token. Whatever property fails
stops the run with a message: a silently wrong mask trains a wrong model.

An assistant turn that calls tools is labelled the same way: what it must generate is the template's
rendering of its content and tool calls, read from F_i, through the end-of-turn token; it has to hold
every called tool's name, else the template does not render tool calls and the run stops. Tool results
and the tool schemas (`tools=conv.tools`) are prompt.

Policies (data.train_on): all_assistant labels every reply; last_assistant only the last one (only its
prefix property is needed); everything labels every token but the first, which nothing in the sample
predicts (BOS where the template writes one; in a packed row it would become the target of the previous
sample's last token). Templates that render the history differently from the turn itself (Qwen3 drops
the reasoning of earlier turns) break the prefix property; data.split_turns then makes one sample per
assistant turn, each the conversation up to that turn rendered as at inference, labelled on that turn
only (`MaskPolicy`). With train_on everything nothing is derived, so `auto` never
splits; `always` still splits, each sample labelled whole.

Speed: rendering goes through `render.Renderer` (transformers' compiled template, called directly).
`encode_batch` renders a run of conversations, then tokenises all their texts in one call. The
{% generation %} cross-check reads the blocks' character spans from the render of T itself (the
spans transformers derives its assistant mask from) and marks tokens from T's offsets as
transformers does: no second render or tokenisation, and every conversation is still checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import jinja2

from lmforge.data.chat import reasoning
from lmforge.data.chat.drafts import (
    Draft,
    Encoded,
    PrefixPropertyError,
    TokenPrefixError,
    finish,
    place,
    tokenize_drafts,
)
from lmforge.data.chat.render import Renderer
from lmforge.data.chat.templates import TOOL_TEMPLATES, builtin_names, template_label
from lmforge.data.chat.turn_ends import (
    TurnError,
    called_names,
    check_reasoning_kept,
    reply_end,
    special_tokens,
    tool_call_end,
)
from lmforge.data.records import Conversation
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

TRAIN_ON = ("all_assistant", "last_assistant", "everything")
SPLIT_TURNS = ("auto", "always", "never")

# Turn properties that a per-turn sample (history rendered as at inference) can repair.
_SPLITTABLE = ("prefix property failed", "content not found", "end of turn differs", "reasoning dropped")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LmforgeError(f"{key}: unknown value {value!r}; use one of {', '.join(choices)}")


@dataclass(frozen=True)
class MaskPolicy:
    """Which tokens carry loss (data.train_on) and when a conversation becomes one sample per assistant turn
    (data.split_turns: never, auto = where the template breaks the prefix property, always)."""

    train_on: str = "all_assistant"
    split_turns: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("data.train_on", self.train_on, TRAIN_ON)
        _check_choice("data.split_turns", self.split_turns, SPLIT_TURNS)


WHOLE = MaskPolicy(split_turns="never")  # every assistant turn of the whole conversation, in one sample
LAST_REPLY = MaskPolicy("last_assistant", "never")  # the final reply only: preference and KTO sides


def encode(tokenizer: Tokenizer, template: str, conv: Conversation, policy: MaskPolicy = MaskPolicy()) -> list[Encoded]:
    """The samples of one conversation under the policy: input_ids of the rendered text and their labels (module
    docstring). never: the whole conversation (errors raise); always: one sample per assistant turn, each the
    conversation up to that turn, labelled on that turn only (last_assistant keeps the last one; everything
    labels each sample whole); auto: the whole conversation, and one sample per turn only where the template
    breaks the prefix property (those samples have `split` set, so callers can count split conversations).

    A conversation without an assistant turn comes back as one sample with every label IGNORE_INDEX (under the
    assistant policies); the caller decides whether to drop (and count) it.
    """
    (encoded,) = encode_batch(tokenizer, template, [conv], policy)
    if isinstance(encoded, LmforgeError):
        raise encoded
    return encoded


def encode_batch(
    tokenizer: Tokenizer, template: str, convs: list[Conversation], policy: MaskPolicy = MaskPolicy()
) -> list[list[Encoded] | LmforgeError]:
    """`encode` for each conversation, their texts tokenised in one call; a conversation that cannot be encoded
    gives its LmforgeError in its place."""
    renderer = Renderer(tokenizer, template)
    out: list = []
    for conv in convs:
        try:
            out.append(_policy_drafts(renderer, conv, policy.train_on, policy.split_turns))
        except LmforgeError as err:
            out.append(err)
    _finish_all(out)
    if policy.split_turns == "auto":  # a history that tokenises unlike its inference prompt: one sample per turn
        again = [k for k, result in enumerate(out) if isinstance(result, TokenPrefixError)]
        redone: list = []
        for k in again:
            try:
                redone.append(_turn_drafts(renderer, convs[k], policy.train_on))
            except LmforgeError as err:
                redone.append(err)
        _finish_all(redone)
        for k, result in zip(again, redone):
            out[k] = result
    return out


def _finish_all(out: list) -> None:
    """Tokenise the drafts of every conversation in `out` in one call and replace them by their samples."""
    drafts = [d for drafts in out if not isinstance(drafts, LmforgeError) for d in drafts]
    tokens = iter(tokenize_drafts(drafts))
    for k, drafts in enumerate(out):
        if isinstance(drafts, LmforgeError):
            continue
        encoded = [(d, next(tokens)) for d in drafts]  # consumed whole even when a sample fails
        try:
            out[k] = [finish(d, whole) for d, whole in encoded]
        except LmforgeError as err:
            out[k] = err


def generation_prompt(
    tokenizer: Tokenizer, template: str, messages: list[dict], tools: list[dict] | None = None
) -> str:
    """The prompt text the model continues at inference: the messages plus the assistant header."""
    renderer = Renderer(tokenizer, template)
    messages = renderer.prepare(_template_messages(renderer, messages))
    return _render(renderer, messages, None, add_generation_prompt=True, tools=tools)


def _template_messages(renderer: Renderer, messages: list[dict]) -> list[dict]:
    """The messages as the template should read them: a harmony template gets reasoning written as a leading
    think block in its field (reasoning.as_field)."""
    if reasoning.harmony(special_tokens(renderer.tokenizer)):
        return [reasoning.as_field(m) for m in messages]
    return messages


def _draft(renderer: Renderer, conv: Conversation, train_on: str, split: bool = False) -> Draft:
    """T rendered and the character spans of what the model must generate (see the module docstring); `split`:
    a per-turn sample already (its errors cannot suggest splitting)."""
    messages = renderer.prepare(_template_messages(renderer, _messages(conv)))
    text, generation = _render_spans(renderer, messages, conv)
    if conv.tools:
        _check_tools_rendered(renderer, messages, text, conv)
    if train_on == "everything":  # nothing to derive; tool calls must still be in the text
        for i, message in enumerate(messages):
            missing = [name for name in called_names(message) if name not in text]
            if missing:
                raise _turn_error(
                    renderer.template,
                    conv,
                    messages,
                    i,
                    TurnError(
                        "tool calls not rendered", f"the call to {missing[0]!r} is missing from the rendered text"
                    ),
                )
        return Draft(renderer, conv, text, None, None)
    turns = _trained_turns(conv)
    if train_on == "last_assistant":
        turns = turns[-1:]
    spans = []
    for i in turns:
        try:
            spans.append(_assistant_span(renderer, messages, i, text, conv))
        except TurnError as err:
            written = _written_turn(renderer, messages, conv) if len(turns) == 1 and i == len(messages) - 1 else None
            if written is None:
                raise _turn_error(renderer.template, conv, messages, i, err, split) from None
            text, span = written
            return Draft(renderer, conv, text, [span], None, last_only=True, written=True)
    return Draft(renderer, conv, text, spans, generation, last_only=train_on == "last_assistant")


def _trained_turns(conv: Conversation) -> list[int]:
    """The assistant messages that carry loss (all of them but those marked `trained=False`)."""
    return [i for i, m in enumerate(conv.messages) if m.role == "assistant" and m.trained is not False]


def _written_turn(renderer: Renderer, messages: list[dict], conv: Conversation) -> tuple[str, tuple[int, int]] | None:
    """The last turn as the generation prompt and what the model writes after it, where the template leaves
    the turn's reasoning to the model (reasoning.py): (text, labelled span), or None."""
    prompt = _render(renderer, messages[:-1], conv, add_generation_prompt=True)
    finished = _render(renderer, messages, conv)
    tokenizer, message = renderer.tokenizer, messages[-1]
    written = reasoning.completion(prompt, finished, message, special_tokens(tokenizer))
    if written is None:
        return None
    body, reply_at = written
    text, start = prompt + body, len(prompt)
    try:
        if message.get("tool_calls"):
            end = tool_call_end(renderer, message, text, text, start + reply_at)
        else:
            end = reply_end(tokenizer, reasoning.answer(message["content"]), text, text, start + reply_at, True)
    except TurnError:
        return None
    return text, (start, end)


def _turn_drafts(renderer: Renderer, conv: Conversation, train_on: str) -> list[Draft]:
    """The per-turn samples of split_turns always, as drafts."""
    turns = _trained_turns(conv)
    if not turns:
        return [_draft(renderer, conv, train_on)]
    if train_on == "last_assistant":
        turns = turns[-1:]
    policy = "everything" if train_on == "everything" else "last_assistant"
    drafts = []
    for i in turns:
        part = Conversation(messages=conv.messages[: i + 1], source=conv.source, tools=conv.tools)
        drafts.append(_draft(renderer, part, policy, split=True))
        drafts[-1].split = True
    return drafts


def _policy_drafts(renderer: Renderer, conv: Conversation, train_on: str, split_turns: str) -> list[Draft]:
    if split_turns == "always":
        return _turn_drafts(renderer, conv, train_on)
    try:
        return [_draft(renderer, conv, train_on)]
    except PrefixPropertyError:
        if split_turns == "never":
            raise
    return _turn_drafts(renderer, conv, train_on)


def _messages(conv: Conversation) -> list[dict]:
    messages = conv.as_dicts()
    if not messages:
        raise LmforgeError(f"{place(conv)}: the conversation has no messages; remove the record")
    if messages[0]["role"] == "assistant":
        raise LmforgeError(
            f"{place(conv)}: the conversation opens with an assistant message, which has no prompt "
            "to learn from; drop that message or put a user message before it"
        )
    return messages


def _assistant_span(renderer: Renderer, messages: list[dict], i: int, text: str, conv) -> tuple[int, int]:
    """Character span [start, end) of T that the model must generate for assistant message i."""
    prompt = _render(renderer, messages[:i], conv, add_generation_prompt=True)
    if not text.startswith(prompt):
        raise TurnError(
            "prefix property failed",
            "the generation prompt is not a prefix of the training text, "
            "so the model would be trained on a context it never sees at inference "
            f"({_diff(prompt, text)})",
        )
    last = i == len(messages) - 1
    finished = text if last else _render(renderer, messages[: i + 1], conv)
    if messages[i].get("tool_calls"):
        end = tool_call_end(renderer, messages[i], text, finished, len(prompt))
    else:
        end = reply_end(renderer.tokenizer, messages[i]["content"], text, finished, len(prompt), last)
    check_reasoning_kept(messages[i], text[len(prompt) : end])
    return len(prompt), end


def _check_tools_rendered(renderer: Renderer, messages: list[dict], text: str, conv: Conversation) -> None:
    """The tool schemas are part of the prompt: a template that ignores `tools` would hide them from the model."""
    if _render(renderer, messages, conv, tools=None) == text:
        raise LmforgeError(
            f"{place(conv)}: {template_label(renderer.template)} ignores the tools the conversation offers "
            f"({', '.join(str(t.get('function', t).get('name', '?')) for t in conv.tools)}): the model would never "
            f"see them. {_TOOLS_HINT}"
        )


_TOOLS_HINT = (
    f"Choose a template with a tool format with model.chat_template (built-in "
    f"{', '.join(TOOL_TEMPLATES)}, or the model's own where it has one), or remove the tool calls, "
    "tool results and tools from the data"
)
_NOT_SET = object()


def _render(renderer: Renderer, messages: list[dict], conv, add_generation_prompt: bool = False, tools=_NOT_SET) -> str:
    if tools is _NOT_SET:
        tools = conv.tools if conv is not None else None
    try:
        return renderer.render(messages, tools, add_generation_prompt)
    except (jinja2.TemplateError, TypeError, ValueError) as err:
        raise _render_error(renderer, messages, conv, tools, err) from None


def _render_spans(renderer: Renderer, messages: list[dict], conv) -> tuple[str, list[tuple[int, int]] | None]:
    try:
        return renderer.render_spans(messages, conv.tools)
    except (jinja2.TemplateError, TypeError, ValueError) as err:
        raise _render_error(renderer, messages, conv, conv.tools, err) from None


def _render_error(renderer: Renderer, messages: list[dict], conv, tools, err: Exception) -> LmforgeError:
    where = place(conv) if conv is not None else "chat"
    uses_tools = tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    hint = (
        f" The conversation uses tools, which this template may not support. {_TOOLS_HINT}."
        if uses_tools
        else f" Fix the record, or choose a template that accepts it with model.chat_template "
        f"(built-ins: {builtin_names()})"
    )
    return LmforgeError(f"{where}: {template_label(renderer.template)} rejects this conversation: {err}.{hint}")


def _turn_error(
    template: str, conv: Conversation, messages: list[dict], i: int, err: TurnError, split: bool = False
) -> LmforgeError:
    turn = sum(1 for m in messages[:i] if m["role"] == "assistant")
    where = f"{place(conv)}: assistant turn {turn} (message {i}): {err.prop}: {err.detail}."
    if err.prop == "reasoning dropped" and i == len(messages) - 1:  # the last message: nothing to split
        return LmforgeError(
            f"{where} {_capital(template_label(template))} does not write reasoning, and lmforge knows no way to "
            "write it for this template (an open <think> block in its generation prompt, or harmony channels): "
            "the model "
            "would not learn it. Choose a template that writes it (a reasoning model's own) with "
            "model.chat_template, put the reasoning into the content as a <think>...</think> block to train it as "
            "text, or remove the reasoning field"
        )
    if err.prop == "tool calls not rendered":
        return LmforgeError(f"{where} {template_label(template)} does not render tool calls. {_TOOLS_HINT}")
    if err.prop in _SPLITTABLE and not split:
        return PrefixPropertyError(
            f"{where} The mask cannot be derived exactly from the whole conversation with this template; set "
            "data.split_turns to auto (the default) or always (one sample per assistant turn, history rendered as "
            f"at inference), choose another template with model.chat_template (built-ins: {builtin_names()}) or "
            "drop the record"
        )
    if err.prop in _SPLITTABLE:
        return LmforgeError(
            f"{where} The mask cannot be derived exactly with this template, even with one sample per assistant "
            f"turn (data.split_turns); choose another template with model.chat_template (built-ins: "
            f"{builtin_names()}) or drop the record"
        )
    return LmforgeError(
        f"{where} The mask cannot be derived exactly for this template; choose another with "
        f"model.chat_template (built-ins: {builtin_names()}) or drop the record"
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _diff(prompt: str, text: str) -> str:
    at = next((k for k, (a, b) in enumerate(zip(prompt, text)) if a != b), min(len(prompt), len(text)))
    return f"at character {at} the prompt has {prompt[at : at + 40]!r}, the training text {text[at : at + 40]!r}"
