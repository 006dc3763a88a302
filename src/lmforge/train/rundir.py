"""The run directory: every file name in it, the output guard, a start that can be undone, and what a finished
run leaves behind.

A run directory is marked as lmforge's by its `run_info.json`, written when the run starts. `--overwrite`
replaces only such a folder, and only once the new run has shown it can start:

0. Rank 0 holds the output's run lock (lock.py) from here to the end; its file is no file of the run.
1. `check_output` looks, writes nothing: a new output must be new or empty; `--resume` needs a complete
   checkpoint whose files check out (checkpoints.py); `--overwrite` needs an lmforge run folder; the location
   must be writable.
2. The caller validates the new run (tokenizer, data) without writing into the output.
3. `RunStart` (a context manager) moves the old run aside to `.<name>.lmforge-old` beside it, creates the
   output (the lock's file moves with it) and writes the run's first files. When the first optimizer step has
   finished (`started()`), the old run is deleted. When anything fails before that, the new files are removed
   and the old run is moved back, so a failed start neither loses the old run nor leaves files that block a
   plain rerun.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.config.load import dump_recipe
from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError
from lmforge.model.load import MODEL_CONFIG_FILE
from lmforge.train import checkpoint_files, checkpoints
from lmforge.train.lock import LOCK_FILE, refuse_file_output  # the running run's pid (lock.py); not a file of the run

RECIPE_FILE = "recipe.yaml"
RUN_INFO_FILE = "run_info.json"
CHECKPOINT = re.compile(r"^checkpoint-\d+$")  # transformers' checkpoint folders inside a run
TEMPLATE_FILE = "chat_template.jinja"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PLOT_FILE = "loss.svg"
PLOT_PNG = "loss.png"  # the same picture as PLOT_FILE, as an image
LOG_HISTORY_FILE = "log_history.json"  # every logged event of a finished run (the Trainer's log_history)
TRAINER_STATE = checkpoint_files.TRAINER_STATE  # in each checkpoint-N/, with the log history up to N
TENSORBOARD_DIR = "tensorboard"  # TensorBoard's event files (train.report_to)
REJECTS_FILE = "rejects.jsonl"
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = MODEL_CONFIG_FILE  # the model's config.json, named where the model layer checks model.path
ASIDE_SUFFIX = ".lmforge-old"


def aside_path(output: Path) -> Path:
    """Where `--overwrite` keeps the old run until the new one has started."""
    return output.parent / f".{output.name}{ASIDE_SUFFIX}"


def is_run_dir(path: Path) -> bool:
    """Whether lmforge made this folder: it holds the run_info.json every run writes when it starts."""
    return (path / RUN_INFO_FILE).is_file()


class OutputPlan:
    """What `check_output` decided: the checkpoint to resume from, and whether an old run is to be replaced."""

    def __init__(
        self,
        output: Path,
        checkpoint: str | None = None,
        replace: bool = False,
        choice: checkpoints.Choice | None = None,
        weights_only: bool = False,
    ) -> None:
        self.output, self.checkpoint, self.replace = output, checkpoint, replace
        self.choice, self.weights_only = choice, weights_only


def check_output(output: Path, *, resume: bool, overwrite: bool, weights_only: bool = False) -> OutputPlan:
    """Guard the output directory without writing to it (see the module docstring). `--resume` takes the newest
    complete checkpoint (checkpoints.choose) once every file it needs is checked (checkpoints.verify);
    `weights_only` (--resume-weights-only) reads only its weights."""
    resume = resume or weights_only
    if resume and overwrite:
        raise LmforgeError("--resume and --overwrite contradict each other; pick one")
    refuse_file_output(output)
    left = aside_path(output)
    if left.exists():
        raise LmforgeError(
            f"{left} holds the run that an interrupted `--overwrite` of {output} was replacing; move "
            f"it back to {output} or delete it, then run again"
        )
    holds_files = output.is_dir() and any(p.name != LOCK_FILE for p in output.iterdir())
    if resume:
        choice = checkpoints.choose(output)
        if choice.checkpoint is None:
            skipped = "".join(f"; {name} skipped: {why}" for name, why in choice.skipped)
            raise LmforgeError(
                f"--resume: no checkpoint in {output} to resume from (no complete checkpoint-N folder{skipped}); "
                "drop --resume to start a new run (train.save_every sets how often checkpoints are saved)"
            )
        checkpoints.verify(choice, output, weights_only=weights_only)
        _check_writable(output, output)
        return OutputPlan(output, checkpoint=str(choice.checkpoint), choice=choice, weights_only=weights_only)
    if holds_files and not overwrite:
        raise LmforgeError(
            f"output directory {output} already holds files; add --resume to continue from its latest "
            "checkpoint, --overwrite to replace it, or set output to a new directory"
        )
    if holds_files and not is_run_dir(output):
        raise LmforgeError(
            f"--overwrite: {output} is not an lmforge run directory (it has no {RUN_INFO_FILE}), and "
            "lmforge replaces only folders it made; set output to a new directory, or empty this one "
            "yourself"
        )
    _check_writable(output.parent if holds_files else output, output)
    return OutputPlan(output, replace=holds_files)


def _check_writable(path: Path, output: Path) -> None:
    """The nearest existing folder at or above `path` must let us create and rename entries."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LmforgeError(
            f"output {output}: cannot write in {existing} (permission denied); set output to a writable location"
        )


class RunStart:
    """The start of a run in its output directory; undone on failure until `started()` (module docstring)."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.aside: Path | None = None
        self.created = False  # the output folder did not exist before
        self.done = plan.checkpoint is not None  # a resumed run has started long ago: nothing to undo

    def __enter__(self) -> RunStart:
        output = self.plan.output
        try:
            if self.plan.replace:
                self.aside = aside_path(output)
                os.rename(output, self.aside)
            self.created = not output.exists()
            output.mkdir(parents=True, exist_ok=True)
            if self.aside is not None:
                _move_lock(self.aside, output)  # the lock stays with the output while the old run is aside
        except OSError as err:
            self._undo()
            raise LmforgeError(
                f"output {output}: cannot prepare the run directory ({err.strerror}); set output to a writable location"
            ) from None
        return self

    def started(self) -> None:
        """The new run has trained a step: the old run it replaces goes."""
        if self.done:
            return
        self.done = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and not self.done:
            self._undo()

    def _undo(self) -> None:
        output = self.plan.output
        if self.aside is not None and self.aside.exists():
            _move_lock(output, self.aside)  # the lock goes back with the old run, still held
        if output.exists() and (self.created or self.aside is not None):
            shutil.rmtree(output, ignore_errors=True)
        elif output.is_dir():  # an empty folder the user made (or the lock made): leave it as it was
            for child in output.iterdir():
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        if self.aside is not None and self.aside.exists():
            os.rename(self.aside, output)


def _move_lock(source: Path, target: Path) -> None:
    """Move the run lock's file (the lock is on the file itself, so it stays held as it moves)."""
    if (source / LOCK_FILE).exists():
        os.rename(source / LOCK_FILE, target / LOCK_FILE)


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
        "output": str(output.resolve()),  # where the run was written: paths beside it resolve after a move
        "data": data_report,
    }
    (output / RUN_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")


def written_at(output: Path) -> Path | None:
    """Where the run in `output` was written (run_info.json's `output`), if it says."""
    info_path = output / RUN_INFO_FILE
    if not info_path.is_file():
        return None
    written = json.loads(info_path.read_text(encoding="utf-8")).get("output")
    return Path(written) if written else None


def started_fingerprint(output: Path) -> str | None:
    """The data fingerprint the run in `output` started with, if it says."""
    info_path = output / RUN_INFO_FILE
    if not info_path.is_file():
        return None
    return json.loads(info_path.read_text(encoding="utf-8")).get("data", {}).get("fingerprint")


def write_rejects(output: Path, content: bytes) -> Path:
    """The records skipped under `data.on_error: skip`, one JSON object a line with why."""
    path = output / REJECTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)
    return path


def write_model_card(output: Path, recipe: Recipe, metrics: dict[str, Any], params: tuple[int, int]) -> None:
    trainable, total = params
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items()))
    card = f"""# {output.name}

Trained with lmforge {__version__}: stage `{recipe.stage}`, tuning `{recipe.tuning.method}`,
from `{recipe.model.path}`.

- trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)
- data: {", ".join(s.label() for s in recipe.data.train)} (max_length {recipe.data.max_length})
- recipe: `{RECIPE_FILE}` (rerun with `lmforge train {RECIPE_FILE}`)
- chat template: `{TEMPLATE_FILE}` (used by `lmforge chat {output.name}`)
- loss curve: `{PLOT_FILE}` (`{PLOT_PNG}` as an image; `{LOG_HISTORY_FILE}` holds every logged value)

## Final metrics

| metric | value |
|---|---|
{rows}
"""
    (output / CARD_FILE).write_text(card, encoding="utf-8")
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_log_history(output: Path, history: list[dict[str, Any]]) -> Path:
    """The whole log history of a finished run, so `lmforge plot` redraws it after the checkpoints are gone."""
    path = output / LOG_HISTORY_FILE
    path.write_text(json.dumps(history, indent=1), encoding="utf-8")
    return path


def read_log_history(run: Path) -> tuple[list[dict[str, Any]], Path]:
    """A run's log history and the file it came from: log_history.json of a finished run, else the trainer state
    of its newest checkpoint (a run stopped early), or of `run` itself when it is a checkpoint folder."""
    candidates = [run / LOG_HISTORY_FILE, run / TRAINER_STATE]
    steps = [int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if CHECKPOINT.match(p.name) and p.is_dir()]
    candidates += [run / f"checkpoint-{step}" / TRAINER_STATE for step in sorted(steps, reverse=True)]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LmforgeError(f"{path}: cannot read the log history ({err}); is the file complete?") from None
        return (data if isinstance(data, list) else data.get("log_history", [])), path
    raise LmforgeError(
        f"{run}: no log history found ({LOG_HISTORY_FILE} of a finished run, or {TRAINER_STATE} in a "
        "checkpoint-N folder); give a run's output directory or one of its checkpoints"
    )
