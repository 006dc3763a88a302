"""A conversation's sample before and after tokenising: the rendered text and its labelled character spans
(`Draft`, made by masks.py), then its ids and labels (`Encoded`).

`tokenize_drafts` tokenises the texts of many drafts in one call; `finish` turns one draft and its tokens into a
sample, holding the token-level rule (masks.py's docstring): the ids before a labelled turn are the ids of its
prompt tokenised on its own.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge.data.chat.render import Renderer
from lmforge.data.chat.spans import (
    IGNORE_INDEX,
    Offsets,
    check_generation,
    compare_marks,
    forward_bounds,
    label_tokens,
    tokenize,
)
from lmforge.data.records import Conversation
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    pass


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    text: str
    split: bool = False  # one of the per-turn samples of a conversation (split_turns)


class PrefixPropertyError(LmforgeError):
    """The template renders the history differently from the turn itself; split_turns can repair it."""


class TokenPrefixError(PrefixPropertyError):
    """The history tokenises differently from a turn's generation prompt at inference; split_turns repairs it."""


@dataclass
class Draft:
    """A conversation rendered and its labelled character spans derived; its tokens come later, in a batch."""

    renderer: Renderer
    conv: Conversation
    text: str
    spans: list[tuple[int, int]] | None  # None: train_on everything (every token but the first)
    generation: list[tuple[int, int]] | None  # the {% generation %} blocks' spans in text, when tracked
    last_only: bool = False
    split: bool = False
    written: bool = False  # the turn's reasoning written by lmforge (reasoning.py): not the template's own text


_Tokens = tuple[list[int], Offsets]


def tokenize_drafts(drafts: list[Draft]) -> list[_Tokens]:
    """The tokens of each draft's text, in one call."""
    if not drafts:
        return []
    return tokenize(drafts[0].renderer.tokenizer, [d.text for d in drafts], place(drafts[0].conv))


def finish(draft: Draft, whole: _Tokens) -> Encoded:
    """The draft's labels from its tokens: each labelled turn starts right after its prompt's own tokens (a
    reply whose first characters would merge with the prompt's last ones is tokenised apart from it), and the
    labels are cross-checked with the template's {% generation %} blocks."""
    input_ids, offsets = whole
    if draft.spans is None:
        return Encoded(input_ids=input_ids, labels=[IGNORE_INDEX] + input_ids[1:], text=draft.text, split=draft.split)
    bounds = forward_bounds(offsets)
    if not all(_on_boundary(bounds, start) for start, _ in draft.spans):
        input_ids, offsets = _prompts_as_at_inference(draft, input_ids, offsets)
        bounds = forward_bounds(offsets)
    where = place(draft.conv)
    labels, ranges = label_tokens(draft.text, input_ids, offsets, draft.spans, where, bounds)
    if draft.written:
        pass  # the reasoning is lmforge's text, not the template's: there are no generation blocks to compare
    elif draft.generation is not None:
        check_generation(
            draft.renderer.tokenizer,
            where,
            input_ids,
            offsets,
            labels,
            ranges,
            draft.generation,
            draft.last_only,
            bounds,
        )
    elif draft.renderer.has_generation:  # spans not tracked: ask apply_chat_template for its mask
        renderer = draft.renderer
        out = renderer.tokenizer.apply_chat_template(
            draft.conv.as_dicts(),
            chat_template=renderer.template,
            tools=draft.conv.tools,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        if list(out["input_ids"]) != input_ids:
            raise LmforgeError(
                f"{where}: apply_chat_template tokenises the conversation differently from the "
                "rendered text; the mask cannot be cross-checked for this tokenizer"
            )
        compare_marks(
            renderer.tokenizer, where, input_ids, labels, [bool(m) for m in out["assistant_masks"]], draft.last_only
        )
    return Encoded(input_ids=input_ids, labels=labels, text=draft.text, split=draft.split)


def _prompts_as_at_inference(draft: Draft, input_ids: list[int], offsets: Offsets) -> _Tokens:
    """The ids with every labelled turn's prompt tokenised as on its own. Where each turn starts on a token
    boundary of the whole text, the text before it tokenises to the same tokens on its own (a BPE or Unigram
    model never lets a token cross that boundary, and the left part's merges do not depend on the right part),
    so nothing is tokenised again (`finish` checks that); elsewhere each prompt is tokenised and compared."""
    tokenizer, where = draft.renderer.tokenizer, place(draft.conv)
    prompts = tokenize(tokenizer, [draft.text[:start] for start, _ in draft.spans], where)
    bad = next((k for k, (ids, _) in enumerate(prompts) if ids != input_ids[: len(ids)]), None)
    if bad is None:
        return input_ids, offsets
    if len(draft.spans) > 1:
        raise _token_prefix_error(draft, prompts[bad][0], input_ids, draft.spans[bad][0])
    return _apart(draft, prompts[0])


def _on_boundary(bounds, at: int) -> bool:
    """Whether a token starts at character `at` and every token before it ends there or earlier."""
    if bounds is None:
        return False
    starts, ends = bounds
    k = bisect_left(starts, at)
    return (k == len(starts) or starts[k] == at) and (k == 0 or ends[k - 1] <= at)


def _apart(draft: Draft, prompt: _Tokens) -> _Tokens:
    """The prompt's own tokens followed by the tokens of the rest of the text, tokenised apart: what the model
    reads at inference and then writes. Refused where the tokenizer would change the rest's text on its own
    (e.g. a SentencePiece tokenizer that prefixes a space to every text)."""
    start = draft.spans[0][0]
    tokenizer = draft.renderer.tokenizer
    ((rest, rest_offsets),) = tokenize(tokenizer, [draft.text[start:]], place(draft.conv))
    ids, rest_text = prompt[0] + rest, tokenizer.decode(rest)
    if tokenizer.decode(ids) != tokenizer.decode(prompt[0]) + rest_text or rest_text != draft.text[start:]:
        raise LmforgeError(
            f"{place(draft.conv)}: token boundary: the reply {draft.text[start : start + 20]!r}... merges with the "
            "end of its generation prompt into one token, and this tokenizer cannot tokenise it apart without "
            "changing its text; trim the reply's leading whitespace"
        )
    return ids, prompt[1] + [(a + start, b + start) for a, b in rest_offsets]


def _token_prefix_error(draft: Draft, prompt: list[int], ids: list[int], at: int) -> TokenPrefixError:
    tokenizer = draft.renderer.tokenizer
    k = next((k for k, (a, b) in enumerate(zip(prompt, ids)) if a != b), len(prompt))
    return TokenPrefixError(
        f"{place(draft.conv)}: token boundary: the generation prompt of the turn at character {at} tokenises as "
        f"{tokenizer.convert_ids_to_tokens(prompt[k : k + 4])} at token {k}, the conversation's history as "
        f"{tokenizer.convert_ids_to_tokens(ids[k : k + 4])} (a reply that starts or ends with whitespace merges "
        "with the text around it), so the model would be trained on a context it never sees at inference. Set "
        "data.split_turns: auto (one sample per assistant turn), or trim the replies' whitespace"
    )


def place(conv: Conversation) -> str:
    return conv.source or "conversation"
