"""`lmforge data inspect` for the preference stages: each pair's prompt once, then both replies with their
trained (loss-bearing) tokens marked; each KTO example's prompt, then its completion and label.

The records are encoded exactly as training encodes them (the pipeline's encoder, data/build/pairs.py: the
same template, masks, max_length and truncation), in data-file order. A bad record (chosen equal to
rejected, an empty reply, no room for the answers) stops the view under `data.on_error: strict`, naming
where it is; under `skip` it is left out, as training leaves it out, and counted on stderr.

`--json`, one object per line:
- a pair: {"index", "source", "prompt_length", "truncated", "dropped", "chosen": {...}, "rejected": {...}},
  where each side carries the fields of an SFT sample ("index", "source", "text", "input_ids", "labels",
  "truncated", "dropped") and its first `prompt_length` tokens are the shared prompt;
- a KTO example: the fields of an SFT sample plus "desirable" (true/false) and "prompt_length".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.commands.inspect import (
    Sample,
    encoded_records,
    html_head,
    html_spans,
    marked_text,
    read_screened,
    segments,
    write_page,
)
from lmforge.config.recipe import Recipe
from lmforge.config.settings import DataSettings
from lmforge.data.build.encode import Sample as Built
from lmforge.data.build.pairs import PAIR_SIDES, prompt_length
from lmforge.data.records import PreferencePair

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

COMPLETION = "completion"
CUT_NOTES = {"history": "older turns dropped to fit max_length", "end": "cut at max_length"}
PAIR_STYLE = """
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
h3 { margin: 0.4em 0 0 0; font-size: 1em; color: #333; }
"""


@dataclass
class PreferenceSample:
    """One record as its stage trains on it: a pair's chosen and rejected sides, or a KTO example's one side."""

    index: int
    source: str
    sides: dict[str, Sample]  # "chosen" and "rejected", or "completion"
    prompt_length: int
    cut: str | None = None  # history | end, as truncate.Fitted says
    dropped: str | None = None
    desirable: bool | None = None  # KTO examples only

    @property
    def is_pair(self) -> bool:
        return self.desirable is None

    def as_json(self) -> dict:
        if not self.is_pair:
            return {
                **self.sides[COMPLETION].as_json(),
                "desirable": self.desirable,
                "prompt_length": self.prompt_length,
            }
        return {
            "index": self.index,
            "source": self.source,
            "prompt_length": self.prompt_length,
            "truncated": self.cut is not None,
            "dropped": self.dropped,
            **{side: self.sides[side].as_json() for side in PAIR_SIDES},
        }


def collect_preference_samples(data: DataSettings, tokenizer: Tokenizer, limit: int | None) -> list[PreferenceSample]:
    """The first `limit` good records (None: all) in data-file order, encoded as training encodes them."""
    records, rejects = read_screened(data, tokenizer)
    encoded = encoded_records(data, tokenizer, records, rejects, limit)
    return [_sample(index, record, built[0]) for index, record, built in encoded]


def _sample(index: int, record, built: Built) -> PreferenceSample:
    names = PAIR_SIDES if isinstance(record, PreferencePair) else (COMPLETION,)
    sides = {
        name: Sample(index, record.source, enc.text, enc.input_ids, enc.labels, built.cut is not None, built.dropped)
        for name, enc in zip(names, built.sides)
    }
    desirable = None if isinstance(record, PreferencePair) else bool(record.label)
    return PreferenceSample(
        index, record.source, sides, prompt_length(built.sides[0]), built.cut, built.dropped, desirable
    )


def split_runs(tokenizer: Tokenizer, side: Sample) -> tuple[str, list[tuple[str, bool]]]:
    """(the prompt's text, the runs of (text, trained) after it) of one side: the first untrained run is the
    prompt, since the prompt is every token before the first trained one."""
    runs = segments(tokenizer, side.input_ids, side.labels)
    if runs and not runs[0][1]:
        return runs[0][0], runs[1:]
    return "", runs


def terminal_view(tokenizer: Tokenizer, sample: PreferenceSample, color: bool) -> str:
    """The prompt once (as context), then each side's reply with its trained tokens marked."""
    prompt = split_runs(tokenizer, next(iter(sample.sides.values())))[0]
    out = f"── {_title(sample)} ──\n" + marked_text([(prompt, False)], color)
    ends_line = prompt.endswith("\n")
    for name, side in sample.sides.items():
        runs = split_runs(tokenizer, side)[1]
        out += ("" if ends_line else "\n") + f"   ▸ {_side_title(name, side, sample)}\n" + marked_text(runs, color)
        ends_line = bool(runs) and runs[-1][0].endswith("\n")
    return out


def _title(sample: PreferenceSample) -> str:
    what = "pair" if sample.is_pair else "example"
    notes = [f"prompt {sample.prompt_length} tokens"]
    if sample.cut:
        notes.append(CUT_NOTES[sample.cut])
    if sample.dropped:
        notes.append(f"dropped in training: {sample.dropped}")
    return f"{what} {sample.index} · {sample.source} · " + ", ".join(notes)


def _side_title(name: str, side: Sample, sample: PreferenceSample) -> str:
    label = "" if sample.is_pair else f" ({'desirable' if sample.desirable else 'undesirable'})"
    return f"{name}{label} · {len(side.input_ids)} tokens, {side.trained} trained"


def write_html(path: Path, recipe: Recipe, tokenizer: Tokenizer, samples: list[PreferenceSample]) -> None:
    """The terminal view as a page: per record, the prompt, then the sides next to each other."""
    what = "pairs" if not samples or samples[0].is_pair else "examples"
    counts = []
    for name in PAIR_SIDES if what == "pairs" else (COMPLETION,):
        total = sum(len(s.sides[name].input_ids) for s in samples)
        trained = sum(s.sides[name].trained for s in samples)
        counts.append(f"{name}: {total} tokens, {trained} trained ({trained / total if total else 0.0:.1%})")
    body = [*html_head(recipe), f'<p class="counts">{len(samples)} {what}; {"; ".join(counts)}.</p>']
    for sample in samples:
        prompt = split_runs(tokenizer, next(iter(sample.sides.values())))[0]
        sides = "".join(
            f"<div><h3>{html.escape(_side_title(name, side, sample))}</h3>"
            f"<pre>{html_spans(split_runs(tokenizer, side)[1])}</pre></div>"
            for name, side in sample.sides.items()
        )
        body.append(
            f"<section><h2>{html.escape(_title(sample))}</h2><pre>{html_spans([(prompt, False)])}</pre>"
            f'<div class="sides">{sides}</div></section>'
        )
    write_page(path, body, PAIR_STYLE)
