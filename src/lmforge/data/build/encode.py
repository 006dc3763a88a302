"""Records to samples, one encoder per record kind, and a run of records to one chunk of flat arrays.

Every stage goes through `encode_samples` (the samples of each record, as training builds them) and
`encode_chunk` (those samples as flat arrays with the counts of what happened to them), which the workers run
on chunks of records in parallel (workers.py, stream.py). The kinds:

- text (pt): each document tokenised (text.py); rows are laid out after the cache.
- conversation (sft): each conversation through the chat template's masks (`masks.encode_batch`: one sample,
  or one per assistant turn for templates that break the prefix property), then the truncation policy
  (truncate.py) on each sample; a sample left with no trained token is dropped, counted by reason.
- preference and kto: pairs.py.

A record the template cannot encode is an error in its place: the pipeline raises it (strict) or keeps it as
a reject (`on_error: skip`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lmforge.config.settings import DataSettings
from lmforge.data.build.text import tokenize_documents
from lmforge.data.build.truncate import fit
from lmforge.data.chat import masks
from lmforge.data.chat.masks import Encoded, MaskPolicy
from lmforge.data.examples import Examples, trained_tokens
from lmforge.data.records import KIND_BY_STAGE, Conversation, Record
from lmforge.data.sources.problems import ENCODE_FAILED, Reject
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

# How a kind's sides are stored: one part ("") or a pair's two ("chosen", "rejected").
PARTS = {"text": ("",), "conversation": ("",), "preference": ("chosen", "rejected"), "kto": ("",)}


@dataclass(frozen=True)
class EncodeSettings:
    """How records of one kind become samples: the template, max_length and the mask and truncation policies."""

    kind: str
    template: str | None
    max_length: int
    train_on: str = "all_assistant"
    split_turns: str = "auto"
    truncation: str = "cut"

    @classmethod
    def of(cls, data: DataSettings) -> EncodeSettings:
        return cls(
            kind=KIND_BY_STAGE[data.stage],
            template=data.template,
            max_length=data.max_length,
            train_on=data.train_on,
            split_turns=data.split_turns,
            truncation=data.truncation,
        )

    @property
    def policy(self) -> MaskPolicy:
        return MaskPolicy(self.train_on, self.split_turns)


@dataclass
class Sample:
    """One training sample as it was built: its sides (one; a pair's chosen and rejected), how it was shortened
    and why training drops it, and the values it carries besides (KTO: desirable, prompt_length)."""

    sides: list[Encoded]
    source: str
    cut: str | None = None  # "history" (older turns dropped), "end" (end cut), or None
    dropped: str | None = None
    columns: dict[str, int] = field(default_factory=dict)


Outcome = list[Sample] | LmforgeError  # a record's samples, or why it cannot be encoded


@dataclass
class EncodedChunk:
    """The kept samples of a run of records as flat arrays by part, with the counts of what happened to them."""

    parts: dict[str, Examples]
    cut_history: int = 0  # kept samples shortened by dropping history turns (some also cut at the end)
    cut_end: int = 0  # kept samples whose end was cut
    split: int = 0  # conversations encoded as one sample per assistant turn
    reasons: Counter = field(default_factory=Counter)  # dropped samples by reason
    errors: list[Reject] = field(default_factory=list)  # records that could not be encoded

    @property
    def truncated(self) -> int:
        return self.cut_history + self.cut_end


def encode_samples(tokenizer: Tokenizer, records: list[Record], settings: EncodeSettings) -> list[Outcome]:
    """Each record's samples as training builds them (dropped ones included, marked), or its error."""
    if settings.kind == "conversation":
        return _conversations(tokenizer, records, settings)
    if settings.kind in ("preference", "kto"):
        from lmforge.data.build.pairs import encode_pairs

        return encode_pairs(tokenizer, records, settings)
    raise ValueError(f"encode_samples: records of kind {settings.kind!r} have no samples (text is laid out)")


def encode_chunk(tokenizer: Tokenizer, records: list[Record], settings: EncodeSettings) -> EncodedChunk:
    """A run of records as one chunk of flat arrays (pretraining: one document per record)."""
    if settings.kind == "text":
        return EncodedChunk({"": Examples.from_rows(tokenize_documents(tokenizer, [r.text for r in records]))})
    chunk = EncodedChunk({})
    kept: list[Sample] = []
    for record, outcome in zip(records, encode_samples(tokenizer, records, settings)):
        if isinstance(outcome, LmforgeError):
            chunk.errors.append(reject_of(record, outcome))
            continue
        chunk.split += any(side.split for s in outcome for side in s.sides)
        for sample in outcome:
            if sample.dropped:
                chunk.reasons[sample.dropped] += 1
                continue
            chunk.cut_history += sample.cut == "history"
            chunk.cut_end += sample.cut == "end"
            kept.append(sample)
    for k, part in enumerate(PARTS[settings.kind]):
        columns = {name: [s.columns[name] for s in kept] for name in (kept[0].columns if kept else {})}
        chunk.parts[part] = Examples.from_rows(
            [s.sides[k].input_ids for s in kept], [s.sides[k].labels for s in kept], columns if k == 0 else None
        )
    return chunk


def reject_of(record: Record, err: LmforgeError) -> Reject:
    """A record the template or the policy cannot encode, as a reject: the reason without the place."""
    reason = str(err).removeprefix(f"{record.source}: ")
    return Reject(record.source, reason, _raw(record), getattr(err, "category", ENCODE_FAILED))


def _raw(record: Record) -> dict:
    if isinstance(record, Conversation):
        return {"messages": record.as_dicts()}
    prompt = [m.as_dict() for m in record.prompt]
    if hasattr(record, "chosen"):
        return {"prompt": prompt, "chosen": record.chosen.as_dict(), "rejected": record.rejected.as_dict()}
    return {"prompt": prompt, "completion": record.completion.as_dict(), "label": record.label}


def _conversations(tokenizer: Tokenizer, convs: list[Conversation], settings: EncodeSettings) -> list[Outcome]:
    out: list[Outcome] = []
    for conv, encoded in zip(convs, masks.encode_batch(tokenizer, settings.template, convs, settings.policy)):
        try:
            if isinstance(encoded, LmforgeError):
                raise encoded
            out.append([_fit_turn(tokenizer, conv, encoded, j, settings) for j in range(len(encoded))])
        except LmforgeError as err:
            out.append(err)
    return out


def _fit_turn(
    tokenizer: Tokenizer, conv: Conversation, encoded: list[Encoded], j: int, settings: EncodeSettings
) -> Sample:
    """Sample j of a conversation within max_length; its history is the conversation it is the last sample of."""
    target = _target_conversation(conv, encoded, j)

    def reencode(messages: list) -> list[Encoded] | None:
        shorter = dataclasses.replace(target, messages=messages)
        try:
            return [masks.encode(tokenizer, settings.template, shorter, settings.policy)[-1]]
        except LmforgeError:  # the template refuses the shortened conversation: its end is cut instead
            return None

    fitted = fit([encoded[j]], target.messages if target else None, reencode, settings.max_length, settings.truncation)
    sample = Sample(fitted.sides, conv.source, fitted.cut, fitted.dropped)
    if sample.dropped is None and not trained_tokens(sample.sides[0].labels):
        sample.dropped = (
            f"no trained token within max_length {settings.max_length}" if sample.cut else "no trained token"
        )
    return sample


def _target_conversation(conv: Conversation, encoded: list[Encoded], j: int) -> Conversation | None:
    """The conversation whose last sample is sample j: the whole one, or (one sample per assistant turn) the
    messages through the j-th assistant message. None when samples and turns do not line up."""
    if len(encoded) == 1:
        return conv
    ends = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    if len(ends) != len(encoded):
        return None
    return dataclasses.replace(conv, messages=conv.messages[: ends[j] + 1])
