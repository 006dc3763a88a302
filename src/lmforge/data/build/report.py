"""What a data build reports: the figures of every stage's examples in one report, and the lines it prints.

The report is computed once, when the examples are encoded, and kept with them in the data cache, so a hit prints
the same lines and gives the same figures as the build it saved. What is laid out after the cache (packing,
pretraining blocks) adds its own figures there (pipeline.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lmforge.data.build.screen import CHARS_PER_TOKEN, Screened, char_bound
from lmforge.data.examples import Examples
from lmforge.data.sources.problems import Reject, by_category, counts_text

WHAT = {"text": "samples", "conversation": "samples", "preference": "pairs", "kto": "examples"}


@dataclass
class DataReport:
    samples: int
    truncated: int
    dropped: int
    reasons: dict[str, int]
    fingerprint: str
    tokens: int = 0  # train tokens in the examples (pairs: both sides)
    trained_tokens: int = 0  # train tokens that carry loss (labels after the causal shift)
    eval_samples: int = 0
    dropped_tokens: int = 0  # pt blocks: the tail after the last full block
    packing_efficiency: float | None = None  # data.packing: real tokens / bin capacity (train)
    records: int = 0  # train records encoded (after mixing and the eval split)
    truncated_history: int = 0  # of `truncated`: shortened by dropping older turns
    split_conversations: int = 0  # conversations encoded as one sample per assistant turn
    rejected: int = 0  # bad records skipped (on_error: skip), train and eval
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    rejects_path: str | None = None
    sources: dict[str, int] = field(default_factory=dict)  # records each source contributes to the mix
    eval_truncated: int = 0
    eval_dropped: int = 0
    eval_reasons: dict[str, int] = field(default_factory=dict)
    cut_records: int = 0  # records with text past what any sample reaches, cut before encoding (screen.py)
    special_records: int = 0  # records typing special-token strings in their text, train and eval
    special_strings: dict[str, int] = field(default_factory=dict)  # each string -> records holding it
    special_at: str | None = None  # where the first of those records is
    template_warning: str | None = None  # the template's end of turn is no special token (control_tokens.py)
    cache: str = "off"  # hit | miss | off

    @property
    def screened(self) -> Screened:
        return Screened(self.cut_records, Counter(self.special_strings), self.special_records, self.special_at)


@dataclass
class Split:
    """One split's examples by part ("" or a pair's "chosen" and "rejected") and what happened on the way."""

    parts: dict[str, Examples]
    records: int = 0  # records encoded into it (bad ones not counted)
    truncated: int = 0
    truncated_history: int = 0
    split: int = 0  # conversations encoded as one sample per assistant turn
    reasons: Counter = field(default_factory=Counter)  # dropped samples by reason
    screened: Screened = field(default_factory=Screened)  # what screening found in its records

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    def tokens(self) -> int:
        return sum(ex.tokens() for ex in self.parts.values())

    def trained_tokens(self) -> int:
        return sum(ex.trained_tokens() for ex in self.parts.values())


def report_of(
    train: Split, evaluation: Split | None, rejects: list[Reject], taken: dict[str, int], fingerprint: str
) -> DataReport:
    screened = Screened().add(train.screened)
    if evaluation is not None:
        screened.add(evaluation.screened)
    return DataReport(
        samples=len(train),
        truncated=train.truncated,
        dropped=sum(train.reasons.values()),
        reasons=dict(train.reasons),
        fingerprint=fingerprint,
        tokens=train.tokens(),
        trained_tokens=train.trained_tokens(),
        eval_samples=len(evaluation) if evaluation else 0,
        records=train.records,
        truncated_history=train.truncated_history,
        split_conversations=train.split,
        rejected=len(rejects),
        rejected_reasons=by_category(rejects),
        sources=dict(taken),
        eval_truncated=evaluation.truncated if evaluation else 0,
        eval_dropped=sum(evaluation.reasons.values()) if evaluation else 0,
        eval_reasons=dict(evaluation.reasons) if evaluation else {},
        cut_records=screened.cut,
        special_records=screened.special_records,
        special_strings=dict(screened.special.most_common()),
        special_at=screened.special_at,
    )


def summary_line(report: DataReport, kind: str, max_length: int, packing: bool) -> str:
    """The one line that says what the train examples are."""
    what = WHAT[kind]
    head = f"lmforge: data: {report.samples:,} train {what} from {report.records:,} records, {report.tokens:,} tokens"
    if kind == "text":
        if packing:
            return f"{head} packed into bins of {max_length} (packing efficiency {report.packing_efficiency:.1%})"
        return f"{head} in blocks of {max_length} ({report.dropped_tokens:,} tokens after the last full block dropped)"
    share = report.trained_tokens / report.tokens if report.tokens else 0.0
    return f"{head}, {share:.1%} trained" + drop_note(
        report.truncated, report.truncated_history, report.reasons, max_length
    )


def eval_line(report: DataReport, kind: str, max_length: int) -> str:
    return f"lmforge: eval: {report.eval_samples:,} {WHAT[kind]}" + drop_note(
        report.eval_truncated, 0, report.eval_reasons, max_length
    )


def drop_note(truncated: int, by_history: int, reasons: dict[str, int], max_length: int) -> str:
    note = f"; {truncated:,} truncated to max_length {max_length}" if truncated else "; none truncated"
    if by_history:
        note += f" ({by_history:,} by dropping older turns)"
    dropped = sum(reasons.values())
    return note + (f", {dropped:,} dropped ({counts_text(reasons)})" if dropped else ", none dropped")


def warning_lines(screened: Screened, template_warning: str | None, max_length: int) -> list[str]:
    """What the data holds that the user should know of: text cut before encoding, special-token strings typed
    in it, a template whose end of turn is no special token."""
    lines = []
    if screened.cut:
        lines.append(
            f"lmforge: data: {screened.cut:,} records hold text longer than {char_bound(max_length):,} "
            f"characters ({CHARS_PER_TOKEN} per token of max_length {max_length}), cut there before encoding: "
            "no sample reaches further, so the samples are the same"
        )
    if screened.special_records:
        strings = ", ".join(f"{s} in {n:,}" for s, n in screened.special.most_common(5))
        lines.append(
            f"lmforge: data: warning: {screened.special_records:,} records type special-token strings in their text "
            f"({strings}; the first at {screened.special_at}): the tokenizer reads each as the control token itself, "
            "so a training text can hold a fake end of turn or a fake new message; remove or rewrite them in the "
            "data (`lmforge data inspect` shows the samples)"
        )
    if template_warning:
        lines.append(f"lmforge: data: warning: {template_warning}")
    return lines
