"""`lmforge data stats` for the preference stages: the pairs (or KTO examples) exactly as training builds them.

From `pairs.build_preference_datasets` (cache included): how many pairs from how many records, token
lengths of the prompt, of each reply (chosen, rejected; KTO: the completion; everything after the prompt)
and of the longest side (KTO: the sequence; what max_length limits), as nearest-rank percentiles; trained tokens (labels
after the causal shift, both sides); truncated, dropped and rejected counts by reason; KTO's desirable and
undesirable counts.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from lmforge.config.recipe import Recipe
from lmforge.data.masks import IGNORE_INDEX
from lmforge.data.pairs import PAIR_SIDES, build_preference_datasets, first_labelled
from lmforge.data.tools import DEFAULT_REJECTS, PERCENTILES, outcome_lines, percentile

LONGEST, SEQUENCE = "longest side", "sequence"  # the length max_length limits: of a pair, of a KTO example


def run_pair_stats(recipe: Recipe, as_json: bool = False, stream: TextIO | None = None) -> int:
    """Print the figures of a preference recipe's train data as a table or one JSON object."""
    from lmforge.model.load import load_tokenizer

    stream = stream or sys.stdout
    bundle = build_preference_datasets(recipe, load_tokenizer(recipe.model), rejects_path=DEFAULT_REJECTS)
    stats = preference_stats(bundle.train, recipe.stage == "kto")
    report = bundle.report
    stats.update(
        stage=recipe.stage, max_length=recipe.data.max_length, records=report.records, truncated=report.truncated,
        truncated_history=report.truncated_history, dropped=report.dropped, dropped_reasons=report.reasons,
        rejected=report.rejected, rejected_reasons=report.rejected_reasons, rejects_path=report.rejects_path,
        eval_samples=report.eval_samples, sources=report.sources, cache=report.cache,
    )
    stream.write((json.dumps(stats) if as_json else format_pair_stats(stats, recipe)) + "\n")
    return 0


def preference_stats(examples: list[dict], kto: bool) -> dict[str, Any]:
    """Counts, token lengths by part and trained tokens of pair examples (or KTO examples)."""
    sides = ("",) if kto else tuple(f"{side}_" for side in PAIR_SIDES)
    whole = SEQUENCE if kto else LONGEST
    parts: dict[str, list[int]] = {"prompt": [], **({"completion": []} if kto else {s: [] for s in PAIR_SIDES}),
                                   whole: []}
    tokens = trained = 0
    for ex in examples:
        n = ex["prompt_length"] if kto else first_labelled(ex["chosen_labels"])
        parts["prompt"].append(n)
        for prefix, name in zip(sides, ("completion",) if kto else PAIR_SIDES):
            parts[name].append(len(ex[f"{prefix}input_ids"]) - n)
            tokens += len(ex[f"{prefix}input_ids"])
            trained += sum(1 for label in ex[f"{prefix}labels"][1:] if label != IGNORE_INDEX)
        parts[whole].append(max(len(ex[f"{prefix}input_ids"]) for prefix in sides))
    stats: dict[str, Any] = {
        "samples": len(examples), "tokens": tokens, "trained_tokens": trained,
        "trained_fraction": trained / tokens if tokens else 0.0,
        "length": {name: _distribution(values) for name, values in parts.items()},
    }
    if kto:
        stats["desirable"] = sum(1 for ex in examples if ex["desirable"])
        stats["undesirable"] = len(examples) - stats["desirable"]
    return stats


def _distribution(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {**{f"p{p}": percentile(ordered, p) for p in PERCENTILES},
            "max": ordered[-1] if ordered else 0, "min": ordered[0] if ordered else 0}


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
    return "\n".join(lines)
