"""The run directory: the overwrite guard, checkpoints to resume from, and what a finished run leaves behind."""

from __future__ import annotations

import json
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from lmforge import __version__
from lmforge.config.load import dump_recipe
from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError

RECIPE_FILE = "recipe.yaml"
RUN_INFO_FILE = "run_info.json"
TEMPLATE_FILE = "chat_template.jinja"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PLOT_FILE = "loss.svg"


def prepare_output(output: Path, *, resume: bool, overwrite: bool) -> str | None:
    """Guard the output directory; return the checkpoint to resume from, if any.

    A non-empty output is never overwritten silently: the user must say --resume or --overwrite.
    """
    if resume and overwrite:
        raise LmforgeError("--resume and --overwrite contradict each other; pick one")
    exists = output.is_dir() and any(output.iterdir())
    if resume:
        checkpoint = get_last_checkpoint(str(output)) if output.is_dir() else None
        if checkpoint is None:
            raise LmforgeError(
                f"--resume: no checkpoint-N directory in {output} to resume from; "
                f"drop --resume to start a new run (train.save_every sets how often checkpoints are saved)"
            )
        return checkpoint
    if exists and not overwrite:
        raise LmforgeError(
            f"output directory {output} already holds files; add --resume to continue from its latest "
            f"checkpoint, --overwrite to replace it, or set output to a new directory"
        )
    if exists:
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return None


def write_run_start(output: Path, recipe: Recipe, data_report: dict[str, Any]) -> None:
    """The resolved recipe, versions and the data fingerprint: enough to rerun or audit the run."""
    import peft
    import torch
    import transformers

    (output / RECIPE_FILE).write_text(dump_recipe(recipe), encoding="utf-8")
    info = {
        "lmforge": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": data_report,
    }
    (output / RUN_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def write_model_card(output: Path, recipe: Recipe, metrics: dict[str, Any], params: tuple[int, int]) -> None:
    trainable, total = params
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items()))
    card = f"""# {output.name}

Trained with lmforge {__version__}: stage `{recipe.stage}`, tuning `{recipe.tuning.method}`,
from `{recipe.model.path}`.

- trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)
- data: {', '.join(s.path for s in recipe.data.train)} (max_length {recipe.data.max_length})
- recipe: `{RECIPE_FILE}` (rerun with `lmforge train {RECIPE_FILE}`)
- chat template: `{TEMPLATE_FILE}` (used by `lmforge chat {output.name}`)
- loss curve: `{PLOT_FILE}`

## Final metrics

| metric | value |
|---|---|
{rows}
"""
    (output / CARD_FILE).write_text(card, encoding="utf-8")
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
