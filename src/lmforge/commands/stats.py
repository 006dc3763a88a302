"""`lmforge data stats`: the truth about a recipe's data, from the examples exactly as training builds them
(the same pipeline, cache included).

- pt and sft: sample count, token-length percentiles (nearest rank: the smallest length with at least p% of
  samples at or below it), the trained-token fraction (labels after the causal shift, as the loss sees them),
  truncated, dropped and rejected counts, and the packing efficiency that best-fit-decreasing bins of
  max_length would reach.
- the preference stages: how many pairs (KTO: examples) from how many records, token lengths of the prompt, of
  each reply (chosen, rejected; KTO: the completion; everything after the prompt) and of the longest side (KTO:
  the sequence; what max_length limits), trained tokens (both sides), the same outcome counts, and KTO's
  desirable and undesirable counts.
- every stage: records whose text was cut before encoding (longer than any sample reaches), records that type
  special-token strings in their text, and a template whose end of turn is no special token (warnings).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from lmforge.config.recipe import PREFERENCE_STAGES, Recipe
from lmforge.config.settings import data_settings
from lmforge.data.build.packing import best_fit_decreasing
from lmforge.data.build.pairs import PAIR_SIDES, first_labelled
from lmforge.data.build.pipeline import DataBundle, build_examples
from lmforge.data.build.screen import CHARS_PER_TOKEN
from lmforge.data.examples import trained_tokens
from lmforge.model.load import load_tokenizer, run_template

DEFAULT_REJECTS = Path("lmforge-rejects.jsonl")
PERCENTILES = (50, 90, 99)
LONGEST, SEQUENCE = "longest side", "sequence"  # the length max_length limits: of a pair, of a KTO example
# The report's outcome counts, as (the name `data stats` gives each, the report's field), in the order printed.
OUTCOMES = [
    *((name, name) for name in ("records", "truncated", "truncated_history", "dropped")),
    ("dropped_reasons", "reasons"),
    *((name, name) for name in ("rejected", "rejected_reasons", "rejects_path", "eval_samples", "sources")),
    *((name, name) for name in ("cut_records", "special_records", "special_strings", "special_at")),
    ("template_warning", "template_warning"),
]


def run_stats(recipe: Recipe, as_json: bool = False, stream: TextIO | None = None) -> int:
    """Print the figures of a recipe's train data as a table or one JSON object."""
    stream = stream or sys.stdout
    tokenizer = load_tokenizer(recipe.model)
    data = data_settings(recipe, run_template(recipe.model, recipe.stage, tokenizer))
    bundle = build_examples(data, tokenizer, rejects_path=DEFAULT_REJECTS)
    if recipe.stage in PREFERENCE_STAGES:
        stats = preference_stats(bundle.train, recipe.stage == "kto")
        stats.update(
            stage=recipe.stage, max_length=recipe.data.max_length, **_outcomes(bundle), cache=bundle.report.cache
        )
        text = format_pair_stats(stats, recipe)
    else:
        stats = dataset_stats(bundle.train, recipe.data.max_length)
        stats.update(
            **_outcomes(bundle), split_conversations=bundle.report.split_conversations, cache=bundle.report.cache
        )
        text = format_stats(stats, recipe)
    stream.write((json.dumps(stats) if as_json else text) + "\n")
    return 0


def _outcomes(bundle: DataBundle) -> dict[str, Any]:
    """The report's outcome counts under the names `data stats` gives them."""
    return {name: getattr(bundle.report, field) for name, field in OUTCOMES}


def dataset_stats(examples: list[dict], max_length: int) -> dict[str, Any]:
    """Figures of a list of examples: counts, length percentiles, trained fraction, packing estimate."""
    lengths = sorted(len(e["input_ids"]) for e in examples)
    tokens = sum(lengths)
    trained = sum(trained_tokens(e["labels"]) for e in examples)
    bins = packed_bins(lengths, max_length)
    return {
        "samples": len(lengths),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_fraction": trained / tokens if tokens else 0.0,
        "length": {
            **{f"p{p}": percentile(lengths, p) for p in PERCENTILES},
            "max": lengths[-1] if lengths else 0,
            "min": lengths[0] if lengths else 0,
        },
        "max_length": max_length,
        "packed_rows": bins,
        "packing_efficiency": tokens / (bins * max_length) if bins else 0.0,
    }


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def packed_bins(lengths: list[int], capacity: int) -> int:
    """How many rows of `capacity` tokens best-fit-decreasing packing needs for samples of these lengths."""
    return len(best_fit_decreasing(lengths, capacity))


def format_stats(s: dict[str, Any], recipe: Recipe) -> str:
    length = s["length"]
    lines = [
        f"samples           {s['samples']:,} (from {s['records']:,} records; {s['eval_samples']:,} eval samples)",
        f"tokens            {s['tokens']:,}, trained {s['trained_tokens']:,} ({s['trained_fraction']:.1%})",
        f"length (tokens)   p50 {length['p50']:,}  p90 {length['p90']:,}  p99 {length['p99']:,}  "
        f"max {length['max']:,}  (max_length {s['max_length']:,})",
        *outcome_lines(s, recipe),
        f"packing estimate  {s['packing_efficiency']:.1%} of {s['packed_rows']:,} rows of {s['max_length']:,} tokens "
        "filled (best-fit decreasing)",
    ]
    if s["split_conversations"]:
        lines.append(f"split per turn    {s['split_conversations']:,} conversations")
    if len(s["sources"]) > 1:
        lines.append("mix               " + ", ".join(f"{k} {v:,}" for k, v in s["sources"].items()))
    return "\n".join(lines + warning_lines(s))


def warning_lines(s: dict[str, Any]) -> list[str]:
    """The screening counts and the template warning of a stats table, where there is anything to say."""
    lines = []
    if s["cut_records"]:
        lines.append(
            f"cut text          {s['cut_records']:,} records (text past {CHARS_PER_TOKEN} characters per token of "
            "max_length, which no sample reaches)"
        )
    if s["special_records"]:
        strings = ", ".join(f"{k} {v:,}" for k, v in s["special_strings"].items())
        lines.append(
            f"special tokens    {s['special_records']:,} records type special-token strings ({strings}; first at "
            f"{s['special_at']}): each becomes a control token (warning)"
        )
    if s["template_warning"]:
        lines.append(f"template          warning: {s['template_warning']}")
    return lines


def outcome_lines(s: dict[str, Any], recipe: Recipe) -> list[str]:
    """The truncated, dropped and rejected lines of a stats table (SFT/pt and preference data alike)."""
    history = f" ({s['truncated_history']:,} by dropping older turns)" if s["truncated_history"] else ""
    rejects = f" -> {s['rejects_path']}" if s["rejects_path"] else ""
    return [
        f"truncated         {s['truncated']:,}{history} (data.truncation: {recipe.data.truncation})",
        f"dropped           {s['dropped']:,}" + _by(s["dropped_reasons"]),
        f"rejected          {s['rejected']:,}" + _by(s["rejected_reasons"]) + rejects,
    ]


def _by(reasons: dict[str, int]) -> str:
    return f" ({', '.join(f'{n:,} {why}' for why, n in reasons.items())})" if reasons else ""


def preference_stats(examples: list[dict], kto: bool) -> dict[str, Any]:
    """Counts, token lengths by part and trained tokens of pair examples (or KTO examples)."""
    sides = ("",) if kto else tuple(f"{side}_" for side in PAIR_SIDES)
    whole = SEQUENCE if kto else LONGEST
    parts: dict[str, list[int]] = {
        "prompt": [],
        **({"completion": []} if kto else {s: [] for s in PAIR_SIDES}),
        whole: [],
    }
    tokens = trained = 0
    for ex in examples:
        n = ex["prompt_length"] if kto else first_labelled(ex["chosen_labels"])
        parts["prompt"].append(n)
        for prefix, name in zip(sides, ("completion",) if kto else PAIR_SIDES):
            parts[name].append(len(ex[f"{prefix}input_ids"]) - n)
            tokens += len(ex[f"{prefix}input_ids"])
            trained += trained_tokens(ex[f"{prefix}labels"])
        parts[whole].append(max(len(ex[f"{prefix}input_ids"]) for prefix in sides))
    stats: dict[str, Any] = {
        "samples": len(examples),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_fraction": trained / tokens if tokens else 0.0,
        "length": {name: _distribution(values) for name, values in parts.items()},
    }
    if kto:
        stats["desirable"] = sum(1 for ex in examples if ex["desirable"])
        stats["undesirable"] = len(examples) - stats["desirable"]
    return stats


def _distribution(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {
        **{f"p{p}": percentile(ordered, p) for p in PERCENTILES},
        "max": ordered[-1] if ordered else 0,
        "min": ordered[0] if ordered else 0,
    }


def format_pair_stats(s: dict[str, Any], recipe: Recipe) -> str:
    what = "examples" if recipe.stage == "kto" else "pairs"
    both = "" if recipe.stage == "kto" else " (both sides)"
    lines = [
        f"{what:<18}{s['samples']:,} (from {s['records']:,} records; {s['eval_samples']:,} eval {what})",
        f"tokens            {s['tokens']:,}{both}, trained {s['trained_tokens']:,} ({s['trained_fraction']:.1%})",
    ]
    if "desirable" in s:
        lines.append(f"labels            {s['desirable']:,} desirable, {s['undesirable']:,} undesirable")
    lines.append("length (tokens)   " + "".join(f"{k:>8}" for k in (*(f"p{p}" for p in PERCENTILES), "max")))
    for name, d in s["length"].items():
        lines.append(f"  {name:<16}" + "".join(f"{d[k]:>8,}" for k in (*(f"p{p}" for p in PERCENTILES), "max")))
    lines += [
        f"max_length        {s['max_length']:,}",
        *outcome_lines(s, recipe),
    ]
    if len(s["sources"]) > 1:
        lines.append("mix               " + ", ".join(f"{k} {v:,}" for k, v in s["sources"].items()))
    return "\n".join(lines + warning_lines(s))
