"""Preference pairs and KTO examples to samples, through the same template, masks and truncation as SFT.

A pair is encoded as two conversations, the prompt followed by the chosen reply and the prompt followed by the
rejected one, each rendered by the chat template and labelled with `masks.LAST_REPLY`: only the final reply and
its end-of-turn token(s) carry labels, and the prompt (the conversation before the final assistant turn) must
tokenise the same on both sides. A KTO example is the prompt followed by its one completion, labelled the same
way, and carries `desirable` and `prompt_length` (where its completion starts) as columns. All the texts of a
run of records are tokenised in one call.

Truncation is the policy of truncate.py on the prompt, applied to whichever side is longer than max_length
(both sides are shortened together). Bad records, counted and reported like every other bad record (strict: an
error naming where they are; `data.on_error: skip`: counted and written to the rejects file with why): chosen
equal to rejected, an empty reply, and a prompt that leaves no room for the answers within max_length (or leaves
the two answers identical there).

KTO's KL estimate pairs each prompt with another example's completion: rows.KTORows derives those pairs from the
stored examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.data.build.encode import EncodeSettings, Outcome, Sample
from lmforge.data.build.truncate import Fitted, fit
from lmforge.data.chat import masks
from lmforge.data.chat.masks import LAST_REPLY, Encoded
from lmforge.data.examples import IGNORE_INDEX, trained_tokens
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

PAIR_SIDES = ("chosen", "rejected")
SAME = "chosen equals rejected"
EMPTY_REPLY = "empty reply"
NO_ROOM = "no room for the answers"


class BadPair(LmforgeError):
    """A pair (or KTO example) that cannot train; `category` is what it is counted under."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


def encode_pairs(
    tokenizer: Tokenizer, records: list[PreferencePair | KTOExample], settings: EncodeSettings
) -> list[Outcome]:
    """Each pair's (or KTO example's) one sample, or why it cannot train (module docstring)."""
    sides = [_replies(record) for record in records]
    convs = [
        Conversation([*r.prompt, reply], r.source, getattr(r, "tools", None))
        for r, replies in zip(records, sides)
        if not isinstance(replies, LmforgeError)
        for reply in replies
    ]
    encoded = iter(masks.encode_batch(tokenizer, settings.template, convs, LAST_REPLY))
    out: list[Outcome] = []
    for record, replies in zip(records, sides):
        if isinstance(replies, LmforgeError):
            out.append(replies)
            continue
        got = [next(encoded) for _ in replies]  # consumed whole even when a side failed
        try:
            out.append([_sample(tokenizer, record, replies, [_one(g) for g in got], settings)])
        except LmforgeError as err:
            out.append(err)
    return out


def prompt_length(encoded: Encoded) -> int:
    """Tokens before the first labelled one: the prompt, rendered with the generation header."""
    return first_labelled(encoded.labels)


def first_labelled(labels: list[int]) -> int:
    """The index of the first label that is not IGNORE_INDEX (len(labels) when there is none)."""
    return next((k for k, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def _replies(record: PreferencePair | KTOExample) -> list[Message] | LmforgeError:
    """The record's replies, [chosen, rejected] or [completion], or why they cannot train."""
    if isinstance(record, PreferencePair):
        replies = [record.chosen, record.rejected]
        names = PAIR_SIDES
    else:
        replies, names = [record.completion], ("completion",)
    for reply, name in zip(replies, names):
        if not (reply.content or "").strip() and not reply.tool_calls:
            return BadPair(
                f"{_where(record)}: the {name} reply is empty; give it text or remove the record", EMPTY_REPLY
            )
    if len(replies) == 2 and _same_reply(*replies):
        return BadPair(
            f"{_where(record)}: the chosen and rejected replies are the same, so there is no preference "
            "to learn; fix or remove the pair",
            SAME,
        )
    return replies


def _sample(
    tokenizer: Tokenizer, record, replies: list[Message], sides: list[Encoded], settings: EncodeSettings
) -> Sample:
    _check_same_prompt(sides, record)
    max_length = settings.max_length

    def reencode(prompt: list[Message]) -> list[Encoded] | None:
        try:
            convs = [Conversation([*prompt, reply], record.source, getattr(record, "tools", None)) for reply in replies]
            shorter = [_one(g) for g in masks.encode_batch(tokenizer, settings.template, convs, LAST_REPLY)]
            _check_same_prompt(shorter, record)
            return shorter
        except LmforgeError:  # the template refuses the shortened prompt: the end is cut instead
            return None

    fitted = fit(sides, record.prompt, reencode, max_length, settings.truncation)
    _check_room(fitted, record, max_length)
    sample = Sample(fitted.sides, record.source, fitted.cut, fitted.dropped)
    if isinstance(record, KTOExample):
        sample.columns = {"desirable": int(record.label), "prompt_length": prompt_length(fitted.sides[0])}
    return sample


def _check_room(fitted: Fitted, record, max_length: int) -> None:
    if fitted.cut == "end" and not all(trained_tokens(s.labels) for s in fitted.sides):
        shortest = min(prompt_length(s) for s in fitted.uncut)
        raise BadPair(
            f"{_where(record)}: the prompt takes {shortest} tokens even with only its last turn, leaving "
            f"no room for the answers within max_length {max_length}; raise data.max_length or shorten "
            "the prompt",
            NO_ROOM,
        )
    if fitted.dropped is None and len(fitted.sides) == 2 and fitted.sides[0].input_ids == fitted.sides[1].input_ids:
        raise BadPair(
            f"{_where(record)}: the chosen and rejected replies are identical within max_length "
            f"{max_length}; raise data.max_length or remove the pair",
            NO_ROOM,
        )


def _check_same_prompt(sides: list[Encoded], record) -> None:
    starts = [prompt_length(s) for s in sides]
    if any(
        s.input_ids[: starts[0]] != sides[0].input_ids[: starts[0]] or n != starts[0] for s, n in zip(sides, starts)
    ):
        raise LmforgeError(
            f"{_where(record)}: the prompt is tokenised differently before the chosen and the rejected "
            "reply; choose a template whose assistant header ends on a token boundary"
        )


def _one(encoded: list[Encoded] | LmforgeError) -> Encoded:
    if isinstance(encoded, LmforgeError):
        raise encoded
    return encoded[0]


def _same_reply(a: Message, b: Message) -> bool:
    if a.tool_calls or b.tool_calls:
        return a.as_dict() == b.as_dict()
    return a.content.strip() == b.content.strip()


def _where(record) -> str:
    return record.source or "record"
