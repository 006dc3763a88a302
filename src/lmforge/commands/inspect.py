"""`lmforge data inspect`: the samples as training sees them, with the trained (loss-bearing) tokens marked.

Needs only the tokenizer. Records come in data-file order, read, screened (data/build/screen.py) and encoded by
the pipeline's own encoders (the same template, masks, max_length and truncation as training), each with every
sample training makes of it: one per SFT conversation, or one per assistant turn where data.split_turns splits
it (samples of one record share its `source`, in turn order). A bad record stops the view under
`data.on_error: strict`, naming where it is; under `skip` it is left out, as training leaves it out, and counted
on stderr. -n counts records (conversations, pairs, KTO examples; pretraining: blocks or bins). The preference
stages have their own views in `inspect_pairs.py`; `run_inspect` serves every stage. Three views:

- `--json`: one JSON object per line per sample on stdout, nothing else there:
  {"index", "source", "text", "input_ids", "labels", "truncated", "dropped"} (+ "position_ids" when packed).
  Without -n it prints every sample.
- terminal (default, -n 5): the rendered text with trained tokens in green (a tty) or inside ⟦…⟧.
- HTML: the same view with a legend and counts, written to --html PATH, or by default (terminal view
  only) to ./lmforge-inspect.html.
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lmforge.config.recipe import PREFERENCE_STAGES, Recipe
from lmforge.config.settings import DataSettings, data_settings
from lmforge.console import say
from lmforge.data.build.encode import EncodeSettings, encode_samples, reject_of
from lmforge.data.build.encode import Sample as Built
from lmforge.data.build.report import warning_lines
from lmforge.data.build.screen import screen
from lmforge.data.build.text import lay_out, tokenize_documents
from lmforge.data.chat.control_tokens import turn_end_warning
from lmforge.data.examples import IGNORE_INDEX, Examples, trained_tokens
from lmforge.data.records import Record
from lmforge.data.rows import ExampleRows
from lmforge.data.sources.problems import Reject, by_category, counts_text
from lmforge.data.sources.read import read_source
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError
from lmforge.model.load import load_tokenizer, run_template

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

DEFAULT_SAMPLES = 5  # records shown in the terminal view without -n
BATCH = 64  # records encoded at a time until enough are collected
DEFAULT_HTML = Path("lmforge-inspect.html")
OPEN_MARK, CLOSE_MARK = "⟦", "⟧"
ANSI_TRAINED, ANSI_CONTEXT, ANSI_RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"


@dataclass
class Sample:
    index: int
    source: str
    text: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    dropped: str | None = None  # why training drops it, if it does
    position_ids: list[int] | None = None
    turn: tuple[int, int] | None = None  # (k, n): the k-th of the n samples of a conversation split per turn

    @property
    def trained(self) -> int:
        return trained_tokens(self.labels)

    def as_json(self) -> dict:
        out = {
            "index": self.index,
            "source": self.source,
            "text": self.text,
            "input_ids": self.input_ids,
            "labels": self.labels,
            "truncated": self.truncated,
            "dropped": self.dropped,
        }
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out


def run_inspect(
    recipe: Recipe, n: int | None, as_json: bool, html_path: Path | None, stream: TextIO | None = None
) -> None:
    """Show the samples of the first n records (None: all with as_json, else 5) as JSON lines or marked text, plus
    HTML (pretraining: the first n blocks or bins).

    `stream` defaults to sys.stdout as it is at call time; logs and messages go to stderr.
    """
    stream = stream or sys.stdout
    if n is not None and n < 1:
        raise LmforgeError(f"-n {n}: the number of records to show must be at least 1")
    limit = n if n is not None else (None if as_json else DEFAULT_SAMPLES)
    tokenizer = load_tokenizer(recipe.model)
    data = data_settings(recipe, run_template(recipe.model, recipe.stage, tokenizer))
    if recipe.stage in PREFERENCE_STAGES:
        from lmforge.commands import inspect_pairs

        samples = inspect_pairs.collect_preference_samples(data, tokenizer, limit)
        view, write = inspect_pairs.terminal_view, inspect_pairs.write_html
    else:
        samples = collect_samples(data, tokenizer, limit)
        view, write = terminal_view, write_html
    if as_json:
        for sample in samples:
            stream.write(json.dumps(sample.as_json(), ensure_ascii=False) + "\n")
        stream.flush()
        if html_path is not None:
            write(html_path, recipe, tokenizer, samples)
            say(f"lmforge: wrote the HTML view to {html_path}")
        return
    color = hasattr(stream, "isatty") and stream.isatty()
    stream.write(_legend(color) + "\n\n")
    for sample in samples:
        stream.write(view(tokenizer, sample, color) + "\n\n")
    path = html_path or DEFAULT_HTML
    write(path, recipe, tokenizer, samples)
    stream.write(f"HTML view: {path.resolve()}\n")


def collect_samples(data: DataSettings, tokenizer: Tokenizer, limit: int | None) -> list[Sample]:
    """Every sample of the first `limit` good records (None: all) in data-file order, as training builds them:
    an SFT conversation's one sample, or one per assistant turn where data.split_turns splits it; pretraining's
    first `limit` blocks (bins with data.packing)."""
    records, rejects = read_screened(data, tokenizer)
    if data.stage != "sft":
        say_skipped(rejects)
        return _text_samples(data, tokenizer, [r.text for r in records], limit)
    samples: list[Sample] = []
    for _, conv, built in encoded_records(data, tokenizer, records, rejects, limit):
        for k, one in enumerate(built, 1):
            enc = one.sides[0]
            turn = (k, len(built)) if len(built) > 1 else None
            samples.append(
                Sample(
                    len(samples),
                    conv.source,
                    enc.text,
                    enc.input_ids,
                    enc.labels,
                    one.cut is not None,
                    one.dropped,
                    turn=turn,
                )
            )
    return samples


def read_screened(data: DataSettings, tokenizer: Tokenizer) -> tuple[list[Record], list[Reject]]:
    """The records of data.train in file order and the bad ones (data.on_error: strict raises), screened as
    training screens them; what screening finds and the template's warning are said on stderr."""
    records: list[Record] = []
    rejects: list[Reject] = []
    for source in resolve_sources(data.sources, data.registry, data.stage):
        got = read_source(source, data.stage, on_error=data.on_error)
        records.extend(got.records)
        rejects.extend(got.rejects)
    warning = turn_end_warning(tokenizer, data.template) if data.template else None
    for line in warning_lines(screen(tokenizer, records, data.max_length), warning, data.max_length):
        say(line)
    return records, rejects


def encoded_records(
    data: DataSettings, tokenizer: Tokenizer, records: list[Record], rejects: list[Reject], limit: int | None
) -> list[tuple[int, Record, list[Built]]]:
    """(index in the file's records, record, its samples) of the first `limit` records (None: all) that can be
    encoded; one that cannot raises (data.on_error: strict) or joins `rejects` (skip), which are said at the end."""
    settings = EncodeSettings.of(data)
    out: list[tuple[int, Record, list[Built]]] = []
    for start in range(0, len(records), BATCH):
        if limit is not None and len(out) >= limit:
            break
        batch = records[start : start + BATCH]
        for index, (record, outcome) in enumerate(zip(batch, encode_samples(tokenizer, batch, settings)), start):
            if limit is not None and len(out) >= limit:
                break
            if isinstance(outcome, LmforgeError):
                if data.on_error == "strict":
                    raise LmforgeError(f"{outcome}; or set data.on_error: skip to leave such records out") from None
                rejects.append(reject_of(record, outcome))
                continue
            out.append((index, record, outcome))
    say_skipped(rejects)
    return out


def say_skipped(rejects: list[Reject]) -> None:
    """The bad records left out under data.on_error: skip, by category, and the first of them."""
    if rejects:
        first = rejects[0]
        where = first.reason if first.reason.startswith(first.source) else f"{first.source}: {first.reason}"
        say(
            f"lmforge: inspect: left out {len(rejects):,} bad records (data.on_error: skip): "
            f"{counts_text(by_category(rejects))}; the first: {where}; `lmforge data stats` lists them all with why"
        )


def _text_samples(data: DataSettings, tokenizer: Tokenizer, texts: list[str], limit: int | None) -> list[Sample]:
    max_length, packing = data.max_length, data.packing
    if packing:  # bins depend on every document
        docs = tokenize_documents(tokenizer, texts)
    else:  # blocks need only the documents that fill the first `limit` of them
        docs, tokens, k = [], 0, 0
        while k < len(texts) and (limit is None or tokens < limit * max_length):
            batch = tokenize_documents(tokenizer, texts[k : k + 100])
            docs.extend(batch)
            tokens += sum(len(d) for d in batch)
            k += 100
    rows = ExampleRows(lay_out(Examples.from_rows(docs), max_length, packing).rows)
    kind = "bin" if packing else "block"
    return [
        Sample(
            i,
            f"{kind} {i}",
            tokenizer.decode(e["input_ids"]),
            e["input_ids"],
            e["labels"],
            position_ids=e.get("position_ids"),
        )
        for i, e in enumerate(rows[:limit])
    ]


def segments(tokenizer: Tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """The decoded text in runs of (text, trained), with the spacing the whole sequence decodes to."""
    runs: list[tuple[int, int, bool]] = []
    for k, label in enumerate(labels):
        trained = label != IGNORE_INDEX
        if runs and runs[-1][2] == trained:
            runs[-1] = (runs[-1][0], k + 1, trained)
        else:
            runs.append((k, k + 1, trained))
    out, decoded = [], ""
    for start, end, trained in runs:
        upto = tokenizer.decode(input_ids[:end])
        if upto.startswith(decoded):  # decoding a prefix keeps the spacing around run boundaries exact
            out.append((upto[len(decoded) :], trained))
            decoded = upto
        else:  # a multi-byte character split across runs: decode the run on its own
            out.append((tokenizer.decode(input_ids[start:end]), trained))
            decoded = tokenizer.decode(input_ids[:end])
    return out


def terminal_view(tokenizer: Tokenizer, sample: Sample, color: bool) -> str:
    return f"── {_title(sample)} ──\n" + marked_text(segments(tokenizer, sample.input_ids, sample.labels), color)


def marked_text(runs: list[tuple[str, bool]], color: bool) -> str:
    """Runs of (text, trained) for a terminal: trained in green and context grey, or trained inside ⟦…⟧."""
    parts = []
    for text, trained in runs:
        if color:
            parts.append((ANSI_TRAINED if trained else ANSI_CONTEXT) + text + ANSI_RESET)
        else:
            parts.append(f"{OPEN_MARK}{text}{CLOSE_MARK}" if trained else text)
    return "".join(parts)


def _title(sample: Sample) -> str:
    notes = [f"{len(sample.input_ids)} tokens, {sample.trained} trained"]
    if sample.turn:
        notes.insert(0, f"assistant turn {sample.turn[0]} of {sample.turn[1]} (data.split_turns)")
    if sample.truncated:
        notes.append("truncated to max_length")
    if sample.dropped:
        notes.append(f"dropped in training: {sample.dropped}")
    return f"sample {sample.index} · {sample.source} · " + ", ".join(notes)


def _legend(color: bool) -> str:
    if color:
        return (
            f"trained tokens (they carry loss) in {ANSI_TRAINED}green{ANSI_RESET}, "
            f"context in {ANSI_CONTEXT}grey{ANSI_RESET}"
        )
    return f"trained tokens (they carry loss) are shown {OPEN_MARK}like this{CLOSE_MARK}; the rest is context"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: 1em; border-radius: 6px; }
mark.trained { background: #c8f0c8; color: #05400a; border-bottom: 2px solid #2a9d3a; }
span.context { color: #666; }
.counts { color: #444; }
"""


def write_html(path: Path, recipe: Recipe, tokenizer: Tokenizer, samples: list[Sample]) -> None:
    """A self-contained page: legend, totals, then each sample with its trained tokens highlighted."""
    total = sum(len(s.input_ids) for s in samples)
    trained = sum(s.trained for s in samples)
    share = trained / total if total else 0.0
    body = [
        *html_head(recipe),
        f'<p class="counts">{len(samples)} samples, {total} tokens, {trained} trained ({share:.1%}).</p>',
    ]
    for sample in samples:
        spans = html_spans(segments(tokenizer, sample.input_ids, sample.labels))
        body.append(f"<section><h2>{html.escape(_title(sample))}</h2><pre>{spans}</pre></section>")
    write_page(path, body)


def html_head(recipe: Recipe) -> list[str]:
    """The page's title, the recipe figures that shape the samples, and the legend."""
    return [
        "<h1>lmforge data inspect</h1>",
        f"<p>stage {recipe.stage} · model {html.escape(recipe.model.path)} · template "
        f"{html.escape(recipe.model.chat_template or 'the tokenizer’s own')} · "
        f"max_length {recipe.data.max_length}</p>",
        '<p class="legend">Legend: <mark class="trained">trained token</mark> carries loss (its label is its id); '
        '<span class="context">context</span> is seen but not trained on (label -100).</p>',
    ]


def html_spans(runs: list[tuple[str, bool]]) -> str:
    return "".join(
        f'<mark class="trained">{html.escape(text)}</mark>'
        if trained
        else f'<span class="context">{html.escape(text)}</span>'
        for text, trained in runs
    )


def write_page(path: Path, body: list[str], style: str = "") -> None:
    """The body's HTML lines as a self-contained page at `path`."""
    page = (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>lmforge data inspect</title>'
        f"<style>{HTML_STYLE}{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as err:
        raise LmforgeError(
            f"--html {path}: cannot write the HTML view ({err.strerror}); give a writable path"
        ) from None
