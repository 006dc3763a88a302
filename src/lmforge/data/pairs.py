"""Preference pairs and KTO examples to token ids and labels, through the same template and masks as SFT.

A pair is encoded as two conversations, the prompt followed by the chosen reply and the prompt followed
by the rejected one, each rendered by the chat template and labelled by `masks.encode_conversation`
with `train_on: last_assistant`: only the final reply and its end-of-turn token(s) carry labels, the
prompt (the conversation before the final assistant turn) is identical on both sides. A KTO example is
the prompt followed by its one completion, labelled the same way.

Truncation (`data.truncation`), applied to whichever side is longer than `data.max_length`:
- drop: the pair is dropped and counted;
- cut: the prompt is shortened first, by dropping its oldest turns (a turn = a user message and what
  follows up to the next one; system messages stay), taking the fewest dropped turns that make both
  sides fit; when even the last turn alone is too long, each side is cut at max_length.

Bad records, counted and reported like every other bad record (strict: an error naming where they
are; `data.on_error: skip`: counted and written to the rejects file with why): chosen equal to
rejected, an empty reply, and a prompt that leaves no room for the answers within max_length (or
leaves the two answers identical there).

KTO's KL estimate needs each prompt paired with another example's completion. The pairs are fixed
here, per split: example i gets the completion of example `kl_mismatch_order(n)[i]` (the one before
it), so the reference can score them once, before training (`preference.precompute_reference`).

The examples are cached like SFT data (`cache.py`, `data.cache`), keyed by the same fingerprint (the data's
content, tokenizer, template, stage, max_length, truncation, on_error, seed...); a hit skips reading and
encoding and prints the same report and rejects file as the build it saved. KTO's mismatched pairs are
derived after the cache.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config.recipe import Recipe
from lmforge.console import say
from lmforge.data import cache
from lmforge.data.dataset import DataBundle, DataReport, read_and_mix, split_eval, write_rejects
from lmforge.data.masks import IGNORE_INDEX, Encoded, encode_conversation
from lmforge.data.readers import Reject, problems_error
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair
from lmforge.data.registry import resolve_sources
from lmforge.data.rows import PairRows
from lmforge.data.templates import resolve_chat_template
from lmforge.errors import LmforgeError

PAIR_SIDES = ("chosen", "rejected")
KTO_COLUMNS = ("desirable", "prompt_length")
CACHE_LAYOUT = "preference-1"  # how preference examples lie in a cache entry: change it when that changes
SAME = "chosen equals rejected"
EMPTY_REPLY = "empty reply"
NO_ROOM = "no room for the answers"
ENCODE_FAILED = "template cannot encode it"


class BadPair(LmforgeError):
    """A pair (or KTO example) that cannot train; `category` is what it is counted under."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass
class Fitted:
    """The encoded sides of one record within max_length, and how they were shortened (None, history, end)."""

    sides: list[Encoded]
    cut: str | None = None
    dropped: str | None = None


@dataclass
class _Split:
    examples: list[dict]
    records: int = 0
    truncated: int = 0
    truncated_history: int = 0
    reasons: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------- one record


def encode_pair(tokenizer, template: str, pair: PreferencePair, max_length: int, truncation: str = "cut") -> Fitted:
    """Both sides of a pair within max_length: [chosen, rejected], each labelled on its final reply only."""
    _check_reply(pair.chosen, pair, "chosen")
    _check_reply(pair.rejected, pair, "rejected")
    if _same_reply(pair.chosen, pair.rejected):
        raise BadPair(f"{_where(pair)}: the chosen and rejected replies are the same, so there is no preference to "
                      "learn; fix or remove the pair", SAME)
    fitted = _fit(tokenizer, template, pair.prompt, [pair.chosen, pair.rejected], pair, max_length, truncation)
    if fitted.dropped is None and fitted.sides[0].input_ids == fitted.sides[1].input_ids:
        raise BadPair(f"{_where(pair)}: the chosen and rejected replies are identical within max_length {max_length}; "
                      "raise data.max_length or remove the pair", NO_ROOM)
    return fitted


def encode_kto(tokenizer, template: str, example: KTOExample, max_length: int, truncation: str = "cut") -> Fitted:
    """A KTO example within max_length: [the prompt and its completion], labelled on the completion only."""
    _check_reply(example.completion, example, "completion")
    return _fit(tokenizer, template, example.prompt, [example.completion], example, max_length, truncation)


def encode_record(tokenizer, template: str, record: PreferencePair | KTOExample, data) -> Fitted:
    """A pair or a KTO example encoded and fitted to `data.max_length` under `data.truncation`."""
    if isinstance(record, PreferencePair):
        return encode_pair(tokenizer, template, record, data.max_length, data.truncation)
    return encode_kto(tokenizer, template, record, data.max_length, data.truncation)


def prompt_length(encoded: Encoded) -> int:
    """Tokens before the first labelled one: the prompt, rendered with the generation header."""
    return first_labelled(encoded.labels)


def first_labelled(labels: list[int]) -> int:
    """The index of the first label that is not IGNORE_INDEX (len(labels) when there is none)."""
    return next((k for k, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def pair_example(fitted: Fitted) -> dict:
    chosen, rejected = fitted.sides
    return {"chosen_input_ids": chosen.input_ids, "chosen_labels": chosen.labels,
            "rejected_input_ids": rejected.input_ids, "rejected_labels": rejected.labels}


def kto_example(fitted: Fitted, desirable: bool) -> dict:
    enc = fitted.sides[0]
    return {"input_ids": enc.input_ids, "labels": enc.labels, "desirable": int(desirable),
            "prompt_length": prompt_length(enc)}


def kl_mismatch_order(batch_size: int) -> list[int]:
    """For KTO's KL estimate: prompt i is paired with completion order[i] = i-1 (prompt 0 with the last).

    The mismatched completions are the batch's own completions, each with another prompt, as in the
    KTO paper and TRL. A batch of one pairs the example with itself (the estimate is then its own r).
    """
    return [(i - 1) % batch_size for i in range(batch_size)]


def add_kl_pairs(examples: list[dict], max_length: int) -> None:
    """Give each KTO example a mismatched pair: its prompt with the completion of the example before it."""
    order = kl_mismatch_order(len(examples))
    for ex, j in zip(examples, order):
        other = examples[j]
        cut_at = other["prompt_length"]
        prompt = ex["input_ids"][:ex["prompt_length"]]
        ex["kl_input_ids"] = (prompt + other["input_ids"][cut_at:])[:max_length]
        ex["kl_labels"] = ([IGNORE_INDEX] * len(prompt) + other["labels"][cut_at:])[:max_length]


def _fit(tokenizer, template: str, prompt: list[Message], replies: list[Message], record, max_length: int,
         truncation: str) -> Fitted:
    sides = _encode_sides(tokenizer, template, prompt, replies, record)
    if max(len(s.input_ids) for s in sides) <= max_length:
        return Fitted(sides)
    if truncation == "drop":
        return Fitted(sides, dropped=f"longer than max_length {max_length} (truncation: drop)")
    head, groups = _turns(prompt)
    for k in range(1, len(groups)):  # fewest oldest turns dropped first
        shorter = _encode_sides(tokenizer, template, [*head, *(m for g in groups[k:] for m in g)], replies, record)
        if max(len(s.input_ids) for s in shorter) <= max_length:
            return Fitted(shorter, cut="history")
        sides = shorter
    cut = [Encoded(s.input_ids[:max_length], s.labels[:max_length], s.text) for s in sides]
    if not all(any(label != IGNORE_INDEX for label in s.labels[1:]) for s in cut):
        shortest = min(prompt_length(s) for s in sides)
        raise BadPair(f"{_where(record)}: the prompt takes {shortest} tokens even with only its last turn, leaving "
                      f"no room for the answers within max_length {max_length}; raise data.max_length or shorten "
                      "the prompt", NO_ROOM)
    return Fitted(cut, cut="end")


def _encode_sides(tokenizer, template: str, prompt: list[Message], replies: list[Message], record) -> list[Encoded]:
    tools = getattr(record, "tools", None)
    sides = [encode_conversation(tokenizer, template, Conversation([*prompt, reply], record.source, tools),
                                 "last_assistant") for reply in replies]
    starts = [prompt_length(s) for s in sides]
    if any(s.input_ids[:starts[0]] != sides[0].input_ids[:starts[0]] or n != starts[0]
           for s, n in zip(sides, starts)):
        raise LmforgeError(f"{_where(record)}: the prompt is tokenised differently before the chosen and the rejected "
                           "reply; choose a template whose assistant header ends on a token boundary")
    return sides


def _turns(prompt: list[Message]) -> tuple[list[Message], list[list[Message]]]:
    """(leading system messages, turns each opening with a user message); one turn if the shape is other."""
    k = 0
    while k < len(prompt) and prompt[k].role == "system":
        k += 1
    head, rest = prompt[:k], prompt[k:]
    if not rest or rest[0].role != "user":
        return head, [rest]
    groups: list[list[Message]] = []
    for m in rest:
        if m.role == "user":
            groups.append([])
        groups[-1].append(m)
    return head, groups


def _check_reply(reply: Message, record, side: str) -> None:
    if not (reply.content or "").strip() and not reply.tool_calls:
        raise BadPair(f"{_where(record)}: the {side} reply is empty; give it text or remove the record", EMPTY_REPLY)


def _same_reply(a: Message, b: Message) -> bool:
    if a.tool_calls or b.tool_calls:
        return a.as_dict() == b.as_dict()
    return a.content.strip() == b.content.strip()


def _where(record) -> str:
    return record.source or "record"


# ---------------------------------------------------------------- the data section


def build_preference_datasets(recipe: Recipe, tokenizer, *, rejects_path: Path | None = None) -> DataBundle:
    """Train (and eval) examples of a preference stage (rm, dpo, simpo, orpo: pairs; kto: examples).

    Pairs: {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"};
    KTO: {"input_ids", "labels", "desirable", "prompt_length", "kl_input_ids", "kl_labels"}.
    Cached like SFT data (`data.cache`), under the same fingerprint; rejected records are written to
    `rejects_path` when given (the bundle holds them either way).
    """
    data = recipe.data
    template = resolve_chat_template(tokenizer, recipe.model.chat_template)
    sources = resolve_sources(data, record_kind(recipe.stage))
    fingerprint = cache.fingerprint(recipe, sources, tokenizer, template)
    rejects_at = rejects_path
    root, key = cache.cache_root(data.cache_dir), cache.make_key({"fingerprint": fingerprint, "layout": CACHE_LAYOUT})
    if data.cache:
        hit = cache.load(root, key)
        if hit is not None:
            say(f"lmforge: data: cache hit, reusing {root / key}")
            arrays, meta, rejects_bytes = hit
            report = DataReport(**meta["report"])
            report.cache = "hit"
            return _finish(recipe, report, _from_arrays(arrays), rejects_bytes, rejects_at)
    start = time.perf_counter()
    splits, report, rejects_bytes = _build_fresh(recipe, tokenizer, template, sources, fingerprint)
    report.cache = "miss" if data.cache else "off"
    if data.cache:
        entry = cache.save(root, key, _to_arrays(splits, recipe.stage == "kto"), {"report": vars(report)},
                           rejects_bytes)
        seconds = time.perf_counter() - start
        say(f"lmforge: data: cache miss, encoded in {seconds:.1f}s ({report.tokens / max(seconds, 1e-9):,.0f} "
             f"tokens/s); cached in {entry}")
    return _finish(recipe, report, splits, rejects_bytes, rejects_at)


def record_kind(stage: str) -> str:
    """The readers' name for a preference stage's records: kto examples, else pairs (read as dpo)."""
    return "kto" if stage == "kto" else "dpo"


def _build_fresh(recipe: Recipe, tokenizer, template: str, sources: list,
                 fingerprint: str) -> tuple[dict[str, list[dict]], DataReport, bytes]:
    data, kind = recipe.data, record_kind(recipe.stage)
    records, rejects, taken = read_and_mix(sources, kind, data)
    train_records, eval_records = split_eval(records, data, kind, rejects)
    train = _encode_split(recipe, tokenizer, template, train_records, "train", rejects)
    evaluation = None
    if eval_records is not None:
        evaluation = _encode_split(recipe, tokenizer, template, eval_records, "eval", rejects)
    report = _report(recipe, train, evaluation, rejects, taken, fingerprint)
    splits = {"train": train.examples, **({"eval": evaluation.examples} if evaluation else {})}
    return splits, report, _rejects_jsonl(rejects)


def _finish(recipe: Recipe, report: DataReport, splits: dict[str, Sequence[dict]], rejects_bytes: bytes,
            rejects_at: Path | None) -> DataBundle:
    """The same messages and rejects file whether the examples were just encoded or come from the cache."""
    if report.rejected:
        where = ""
        if rejects_at is not None:
            report.rejects_path = str(write_rejects(rejects_at, rejects_bytes))
            where = f"; they are listed with why in {report.rejects_path}"
        say(f"lmforge: data: skipped {report.rejected:,} bad records (data.on_error: skip): "
            f"{_counts(report.rejected_reasons)}{where}")
    say(_summary(recipe, report))
    if recipe.stage == "kto":  # derived from the examples, so not cached
        for examples in splits.values():
            add_kl_pairs(examples, recipe.data.max_length)
    return DataBundle(train=splits["train"], eval=splits.get("eval"), report=report, rejects=rejects_bytes)


def _to_arrays(splits: dict[str, list[dict]], kto: bool) -> dict[str, cache.Examples]:
    """Flat arrays for the cache: KTO examples as they are (desirable, prompt_length as columns); pairs as
    one entry per side, `<split>.chosen` and `<split>.rejected`."""
    if kto:
        return {name: cache.Examples.from_dicts(examples, columns=KTO_COLUMNS) for name, examples in splits.items()}
    return {f"{name}.{side}": cache.Examples.from_dicts(
                [{"input_ids": ex[f"{side}_input_ids"], "labels": ex[f"{side}_labels"]} for ex in examples])
            for name, examples in splits.items() for side in PAIR_SIDES}


def _from_arrays(arrays: dict[str, cache.Examples]) -> dict[str, Sequence[dict]]:
    """The examples `_to_arrays` stored, by split: KTO examples as dicts (the KL pairs are added to them),
    pairs as rows read from the two sides' arrays when asked for (nothing built per pair)."""
    splits: dict[str, Sequence[dict]] = {}
    for name in arrays:
        split, _, side = name.partition(".")
        if not side:
            splits[split] = arrays[name].to_dicts()
        elif split not in splits:
            splits[split] = PairRows(*(arrays[f"{split}.{s}"] for s in PAIR_SIDES))
    return splits


def _encode_split(recipe: Recipe, tokenizer, template: str, records: list, split: str, rejects: list) -> _Split:
    data = recipe.data
    out, bad = _Split(examples=[]), []
    for record in records:
        try:
            fitted = encode_record(tokenizer, template, record, data)
        except LmforgeError as err:
            bad.append(Reject(record.source, str(err).removeprefix(f"{record.source}: "), _raw(record),
                              getattr(err, "category", ENCODE_FAILED)))
            continue
        if fitted.dropped:
            out.reasons[fitted.dropped] += 1
            continue
        out.truncated += fitted.cut is not None
        out.truncated_history += fitted.cut == "history"
        out.examples.append(pair_example(fitted) if isinstance(record, PreferencePair)
                            else kto_example(fitted, record.label))
    if bad and data.on_error == "strict":
        raise problems_error(f"{split} data", bad, len(records))
    rejects.extend(bad)
    out.records = len(records) - len(bad)
    if not out.examples:
        why = _counts(out.reasons) or "all bad"
        raise LmforgeError(f"no {split} sample is left of {len(records)} records ({why}); "
                           f"raise data.max_length (now {data.max_length}) or check the data")
    return out


def _report(recipe: Recipe, train: _Split, evaluation: _Split | None, rejects: list, taken: dict[str, int],
            fingerprint: str) -> DataReport:
    keys = ("input_ids",) if recipe.stage == "kto" else ("chosen_input_ids", "rejected_input_ids")
    labels = ("labels",) if recipe.stage == "kto" else ("chosen_labels", "rejected_labels")
    return DataReport(
        samples=len(train.examples), truncated=train.truncated, dropped=sum(train.reasons.values()),
        reasons=dict(train.reasons), fingerprint=fingerprint,
        tokens=sum(len(ex[k]) for ex in train.examples for k in keys),
        trained_tokens=sum(sum(1 for t in ex[k][1:] if t != IGNORE_INDEX) for ex in train.examples for k in labels),
        eval_samples=len(evaluation.examples) if evaluation else 0, records=train.records,
        truncated_history=train.truncated_history, rejected=len(rejects),
        rejected_reasons=dict(Counter(r.category for r in rejects)), sources=dict(taken),
        eval_truncated=evaluation.truncated if evaluation else 0,
        eval_dropped=sum(evaluation.reasons.values()) if evaluation else 0,
        eval_reasons=dict(evaluation.reasons) if evaluation else {},
    )


def _summary(recipe: Recipe, report: DataReport) -> str:
    what = "examples" if recipe.stage == "kto" else "pairs"
    line = (f"lmforge: data: {report.samples:,} train {what} from {report.records:,} records, {report.tokens:,} "
            f"tokens, {report.trained_tokens / max(report.tokens, 1):.1%} trained")
    line += f"; {report.truncated:,} truncated to max_length {recipe.data.max_length}" if report.truncated else ""
    line += f" ({report.truncated_history:,} by dropping older turns)" if report.truncated_history else ""
    line += f", {report.dropped:,} dropped ({_counts(report.reasons)})" if report.dropped else ""
    return line + (f"; eval: {report.eval_samples:,} {what}" if report.eval_samples else "")


def _raw(record) -> dict[str, Any]:
    prompt = [m.as_dict() for m in record.prompt]
    if isinstance(record, PreferencePair):
        return {"prompt": prompt, "chosen": record.chosen.as_dict(), "rejected": record.rejected.as_dict()}
    return {"prompt": prompt, "completion": record.completion.as_dict(), "label": record.label}


def _rejects_jsonl(rejects: list[Reject]) -> bytes:
    lines = [json.dumps({"source": r.source, "reason": r.reason, "category": r.category, "raw": r.raw},
                        ensure_ascii=False, default=str) for r in rejects]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in counts.items())
