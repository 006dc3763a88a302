"""From data settings to a stage's training and eval examples, with a report of what happened: one pipeline for
every stage.

The flow: `registry.resolve_sources` (names -> concrete sources) -> read every source (`data.on_error`) -> mix
(weights, ratios, sample counts; seeded) -> the eval split -> encode in parallel processes with the stage's
encoder (encode.py: documents, conversations, pairs, KTO examples; truncation policy applied) -> flat arrays.
Where every record is taken once, in file order, from local JSON Lines files, reading happens inside the
encoding processes (stream.py) instead. The encoded examples are cached on disk (cache.py) under a key naming
the data's content, the tokenizer, the template and every setting that shapes them; a second run with the same
key loads them instead. After the cache they are laid out for training (pretraining blocks or packed bins, packed
SFT rows) and handed to the trainer as rows read from the arrays on demand (rows.py).

Every record or sample left out is counted and printed: bad records skipped under `on_error: skip` (returned as
rejects, for the caller to write where it keeps its files, with why), samples dropped by the truncation policy,
mixing's draw. The eval split is taken from the mixed records before encoding (`mixing.take_eval`), or read from
`eval_path`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.config.settings import DataSettings, Source
from lmforge.console import say
from lmforge.data.build import cache, stream
from lmforge.data.build.encode import PARTS, EncodedChunk, EncodeSettings
from lmforge.data.build.packing import pack
from lmforge.data.build.report import DataReport, Split, eval_line, report_of, summary_line, warning_lines
from lmforge.data.build.screen import Screened, screen
from lmforge.data.build.text import lay_out
from lmforge.data.build.workers import collector_paused, default_workers, encode_records, processes_for
from lmforge.data.chat.control_tokens import turn_end_warning
from lmforge.data.examples import Examples
from lmforge.data.records import KIND_BY_STAGE
from lmforge.data.rows import ExampleRows, KTORows, PairRows
from lmforge.data.sources.mixing import mix, take_eval
from lmforge.data.sources.problems import Reject, counts_text, problems_error, rejects_jsonl
from lmforge.data.sources.read import read_source
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer


@dataclass
class DataBundle:
    train: Sequence[dict]  # rows read from the flat arrays when asked for (rows.py)
    eval: Sequence[dict] | None
    report: DataReport
    rejects: bytes = b""  # the skipped records as JSON Lines, for the caller to write where it keeps its files


def build_examples(
    data: DataSettings, tokenizer: Tokenizer, *, rejects_path: Path | None = None, wait_for_cache: bool = False
) -> DataBundle:
    """The train (and eval) examples of the stage, as the trainer reads them; skipped records are written to
    `rejects_path` when given (the bundle holds them either way).

    `wait_for_cache`: another process (rank 0 of a distributed job) encodes these examples into the cache, so
    wait for its entry and read it instead of encoding them again (with data.cache off every process encodes).
    """
    begin = time.perf_counter()
    kind = KIND_BY_STAGE[data.stage]
    sources = resolve_sources(data.sources, data.registry, data.stage)
    fingerprint = cache.fingerprint(data, sources, tokenizer)
    root, key = cache.cache_root(data.cache_dir), cache.make_key({"fingerprint": fingerprint})
    if wait_for_cache and data.cache:
        hit = cache.wait_for(root, key)
    else:
        hit = cache.load(root, key) if data.cache else None
    if hit is not None:
        say(
            f"lmforge: data: cache hit, reusing {root / key} (looked up and loaded in "
            f"{time.perf_counter() - begin:.2f}s)"
        )
        named, meta, rejects = hit
        splits, report = cache.split_names(named), DataReport(**meta["report"])
        report.cache = "hit"
    else:
        start = time.perf_counter()
        splits, report, rejects = _build_fresh(data, kind, tokenizer, sources, fingerprint)
        report.cache = "miss" if data.cache else "off"
        if data.cache:
            entry = cache.save(root, key, cache.entry_names(splits), {"report": vars(report)}, rejects)
            seconds = time.perf_counter() - start
            say(
                f"lmforge: data: cache miss, encoded in {seconds:.1f}s ({report.tokens / max(seconds, 1e-9):,.0f} "
                f"tokens/s); cached in {entry}"
            )
    if report.rejected and rejects_path is not None:
        report.rejects_path = str(write_rejects(rejects_path, rejects))
    report.template_warning = turn_end_warning(tokenizer, data.template) if data.template else None
    return _finish(data, kind, report, splits, rejects)


def read_and_mix(sources: list[Source], kind: str, data: DataSettings) -> tuple[list, list[Reject], dict[str, int]]:
    """Every source read (bad records raised or collected per on_error), then mixed as the settings say; also the
    count each source contributes."""
    parts, rejects = [], []
    with collector_paused():
        for source in sources:
            got = read_source(source, kind, on_error=data.on_error)
            parts.append((source, got.records))
            rejects.extend(got.rejects)
    records, taken = mix(parts, data.seed)
    _say_mixed(sources, taken)
    return records, rejects, taken


def split_eval(records: list, data: DataSettings, kind: str, rejects: list[Reject]) -> tuple[list, list | None]:
    """(train records, eval records or None): a seeded fraction of the records, or the records at eval_path."""
    if data.eval_path is not None:
        got = read_source(Source(path=data.eval_path), kind, on_error=data.on_error)
        rejects.extend(got.rejects)
        return records, got.records
    if data.eval_fraction is None:
        return records, None
    return take_eval(records, data.eval_fraction, data.seed)


def write_rejects(path: Path, content: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    except OSError as err:
        raise LmforgeError(f"cannot write the rejects file {path} ({err.strerror}); make its folder writable") from None
    return path


def _say_mixed(sources: list[Source], taken: dict[str, int]) -> None:
    if len(sources) > 1:
        say("lmforge: data: mixed " + ", ".join(f"{label} {n:,}" for label, n in taken.items()) + " records")


def _build_fresh(
    data: DataSettings, kind: str, tokenizer: Tokenizer, sources: list[Source], fingerprint: str
) -> tuple[dict[str, dict[str, Examples]], DataReport, bytes]:
    settings = EncodeSettings.of(data)
    workers = default_workers(data.workers)
    if stream.streamable(sources, data):  # every record once, in file order: read in the workers
        got = stream.encode_sources(tokenizer, sources, settings, workers, data.on_error)
        _say_mixed(sources, got.taken)
        rejects, taken = got.rejects, got.taken
        _, eval_records = split_eval([], data, kind, rejects)  # eval_path, if any (no fraction here)
        train = _split_of(data, kind, got.chunks, sum(taken.values()), "train", rejects, got.screened)
    else:
        records, rejects, taken = read_and_mix(sources, kind, data)
        train_records, eval_records = split_eval(records, data, kind, rejects)
        train = _encode_split(data, tokenizer, settings, workers, train_records, "train", rejects)
    evaluation = None
    if eval_records is not None:
        evaluation = _encode_split(data, tokenizer, settings, workers, eval_records, "eval", rejects)
    report = report_of(train, evaluation, rejects, taken, fingerprint)
    splits = {"train": train.parts, **({"eval": evaluation.parts} if evaluation else {})}
    return splits, report, rejects_jsonl(rejects)


def _encode_split(
    data: DataSettings,
    tokenizer: Tokenizer,
    settings: EncodeSettings,
    workers: int,
    records: list,
    split: str,
    rejects: list[Reject],
) -> Split:
    n = processes_for(len(records), workers)
    if n > 1:
        say(f"lmforge: data: encoding {len(records):,} {split} records in {n} processes")
    screened = screen(tokenizer, records, settings.max_length)
    chunks = encode_records(tokenizer, records, settings, workers, stop_on_error=data.on_error == "strict")
    return _split_of(data, settings.kind, chunks, len(records), split, rejects, screened)


def _split_of(
    data: DataSettings,
    kind: str,
    chunks: list[EncodedChunk],
    n_records: int,
    split: str,
    rejects: list[Reject],
    screened: Screened,
) -> Split:
    """The encoded chunks of a split's records as one split; records that cannot be encoded raise (strict) or
    become rejects."""
    errors = [e for c in chunks for e in c.errors]
    if errors and data.on_error == "strict":
        raise problems_error(f"{split} data", errors, n_records)
    rejects.extend(errors)
    out = Split(
        {part: Examples.concat(c.parts[part] for c in chunks) for part in PARTS[kind]},
        records=n_records - len(errors),
        screened=screened,
    )
    for c in chunks:
        out.truncated += c.truncated
        out.truncated_history += c.cut_history
        out.split += c.split
        out.reasons.update(c.reasons)
    if not len(out):
        why = counts_text(out.reasons) or "all bad"
        raise LmforgeError(
            f"no {split} sample is left of {n_records} records ({why}); raise data.max_length (now "
            f"{data.max_length}) or check the data with `lmforge data inspect`"
        )
    return out


def _finish(
    data: DataSettings, kind: str, report: DataReport, splits: dict[str, dict[str, Examples]], rejects: bytes
) -> DataBundle:
    """The same lines, layout and rows whether the examples were just encoded or come from the cache."""
    if report.rejected:
        where = f"; they are listed with why in {report.rejects_path}" if report.rejects_path else ""
        say(
            f"lmforge: data: skipped {report.rejected:,} bad records (data.on_error: skip): "
            f"{counts_text(report.rejected_reasons)}{where}"
        )
    if report.split_conversations:
        say(
            f"lmforge: data: {report.split_conversations:,} conversations became one sample per assistant turn "
            f"(data.split_turns: {data.split_turns})"
        )
    for line in warning_lines(report.screened, report.template_warning, data.max_length):
        say(line)
    laid = {name: _lay_out(data, kind, name, parts, report) for name, parts in splits.items()}
    say(summary_line(report, kind, data.max_length, data.packing))
    if "eval" in laid:
        say(eval_line(report, kind, data.max_length))
    rows = {name: _rows(kind, parts, data.max_length) for name, parts in laid.items()}
    return DataBundle(train=rows["train"], eval=rows.get("eval"), report=report, rejects=rejects)


def _lay_out(
    data: DataSettings, kind: str, name: str, parts: dict[str, Examples], report: DataReport
) -> dict[str, Examples]:
    """Pretraining documents as blocks or packed bins, SFT samples packed when data.packing says (the one packer,
    at the same point for both); the figures of the train split's layout into the report."""
    if kind == "text":
        layout = lay_out(parts[""], data.max_length, data.packing)
        if not len(layout.rows):
            raise LmforgeError(
                f"the {name} documents hold {parts[''].tokens()} tokens, fewer than one block of "
                f"data.max_length {data.max_length}; lower max_length, add text or set data.packing"
            )
        if name == "train":
            report.samples, report.tokens = len(layout.rows), layout.rows.tokens()
            report.trained_tokens, report.dropped_tokens = layout.rows.trained_tokens(), layout.dropped_tokens
            report.packing_efficiency = layout.efficiency
        else:
            report.eval_samples = len(layout.rows)
        return {"": layout.rows}
    if kind == "conversation" and data.packing:
        rows, efficiency = pack(parts[""], data.max_length)
        if name == "train":
            report.packing_efficiency = efficiency
        say(
            f"lmforge: data: packed {len(parts[''].lengths):,} {name} samples into {len(rows):,} rows of "
            f"{data.max_length} (packing efficiency {efficiency:.1%})"
        )
        return {"": rows}
    return parts


def _rows(kind: str, parts: dict[str, Examples], max_length: int) -> Sequence[dict]:
    if kind == "preference":
        return PairRows(parts["chosen"], parts["rejected"])
    if kind == "kto":
        return KTORows(parts[""], max_length)
    return ExampleRows(parts[""])
