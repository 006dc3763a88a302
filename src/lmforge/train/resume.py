"""`lmforge train --resume`: what may differ from the run's start, a finished run left alone, and the record of
each resume.

A resumed run continues the same training, so the recipe given to `--resume` is compared key by key with the one
the run started with (its recipe.yaml, else the copy in the checkpoint's ledger, see ledger.py):

- applied and recorded (run_info.json's `resumes`): keys that change how the run is saved, logged or computed,
  not what it computes (`APPLIED`), and `data.*` keys when the data fingerprint is unchanged (the same examples,
  e.g. a data file moved);
- refused, naming the key: everything else. The optimizer and scheduler states in the checkpoint decide
  train.lr, scheduler, warmup and weight_decay; the schedule was made for the run's length, so max_steps and
  epochs cannot change either (a longer run is a new run from this one's weights); batches and seeds change what
  is trained; model, tuning, stage and preference change the model itself. The number of processes is checked
  too, since the global batch depends on it.

The data is compared by its fingerprint (data, template, tokenizer, settings), recorded in run_info.json and in the
checkpoint's ledger; a run that records neither is not resumed.

A run whose newest checkpoint is at its last step is finished: with its final model written (metrics.json, the
last file written) `--resume` refuses and changes nothing; without it (stopped while writing the final model) the
final model is written from that checkpoint without training a step more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerState

from lmforge.config.recipe import Recipe
from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.train import ranks, rundir
from lmforge.train.checkpoint_files import TRAINER_STATE
from lmforge.train.ledger import RunLedger, read_trainer_state

APPLIED = (
    "output",
    "train.save_every",
    "train.keep",
    "train.log_every",
    "train.eval_every",
    "train.profile_steps",
    "train.activation_checkpointing",
    "train.compile",
    "train.loss_chunk",
    "data.workers",
    "data.cache",
    "data.cache_dir",
)
NEW_RUN = "start a new run (--overwrite, or another output)"
WHY_REFUSED = {
    "train.max_steps": "the learning-rate schedule was made for the run's length when it started; to train "
    "longer, start a new run from this run's final weights",
    "train.epochs": "the learning-rate schedule was made for the run's length when it started; to train "
    "longer, start a new run from this run's final weights",
    "train.lr": "the optimizer and scheduler states saved in the checkpoint decide the learning rate",
    "train.scheduler": "the scheduler state saved in the checkpoint decides the schedule",
    "train.warmup": "the scheduler state saved in the checkpoint decides the warmup",
    "train.weight_decay": "the optimizer state saved in the checkpoint decides the weight decay",
}


@dataclass
class ResumePoint:
    """A checkpoint `--resume` may continue from, with its ledger and the recipe keys it applies."""

    output: Path
    checkpoint: str
    step: int
    ledger: RunLedger
    applied: dict[str, list[Any]] = field(default_factory=dict)  # key -> [as started, now]
    at_end: bool = False  # the checkpoint is at the last step: only the final model is left to write


def check_resume(recipe: Recipe, output: Path, checkpoint: str) -> ResumePoint:
    """Refuse a resume that would not continue the same run, or that has nothing left to do; read-only."""
    state = read_trainer_state(checkpoint)
    step, total = state.get("global_step", 0), state.get("max_steps", 0)
    ledger = RunLedger.from_checkpoint(checkpoint)
    started = _started_recipe(output, ledger)
    applied = _changes(started, recipe.model_dump(mode="json"), recipe)
    if ledger.world_size not in (None, ranks.world_size()):
        raise LmforgeError(
            f"--resume: {output} was trained by {ledger.world_size} process(es) and this is {ranks.world_size()}; "
            f"the global batch and the data order depend on it, so resume with --nproc {ledger.world_size} "
            f"(or the same launcher settings), or {NEW_RUN}"
        )
    at_end = total > 0 and step >= total
    if at_end and (output / rundir.METRICS_FILE).is_file():
        raise LmforgeError(
            f"--resume: {output} already finished at step {step} of {total} (its final model and "
            f"{rundir.METRICS_FILE} are written), so there is nothing to resume and nothing was changed; to "
            f"train longer, {NEW_RUN} from this run's final weights"
        )
    return ResumePoint(output, checkpoint, step, ledger, applied, at_end)


def check_same_data(point: ResumePoint, fingerprint: str) -> None:
    """The data (content, template, tokenizer, settings) must be what the run started with."""
    started = rundir.started_fingerprint(point.output) or point.ledger.fingerprint
    if started is None:
        raise LmforgeError(
            f"--resume: cannot tell whether the data changed since {point.output} started: neither its "
            f"{rundir.RUN_INFO_FILE} nor {point.checkpoint} records the data fingerprint; restore "
            f"{rundir.RUN_INFO_FILE}, or {NEW_RUN}"
        )
    if started != fingerprint:
        raise LmforgeError(
            f"--resume: the data, template, tokenizer or data settings changed since {point.output} started "
            f"(fingerprint {started[:12]} then, {fingerprint[:12]} now), so resuming would not continue the "
            f"same run; restore them or {NEW_RUN}"
        )


def record_resume(point: ResumePoint) -> None:
    """Append this resume (when, from which step, what changed) to run_info.json's `resumes`, and say it."""
    say(f"lmforge: resuming from {point.checkpoint}")
    for key, (old, new) in point.applied.items():
        say(f"lmforge: --resume applies {key}: {old!r} -> {new!r}")
    info_path = point.output / rundir.RUN_INFO_FILE
    if not info_path.is_file():
        say(f"lmforge: {info_path} is missing, so this resume is recorded only in the checkpoints")
        return
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info.setdefault("resumes", []).append(
        {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "step": point.step,
            "checkpoint": Path(point.checkpoint).name,
            "changed": point.applied,
        }
    )
    tmp = info_path.with_name(info_path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    tmp.replace(info_path)


def train_or_finish(trainer, point: ResumePoint | None, checkpoint: str | None) -> dict[str, Any]:
    """Train (from the checkpoint when resuming) and return the Trainer's metrics of this call. A checkpoint at the
    last step is only loaded: the Trainer would train one step past the end (its loop looks at the step count
    after a step), and the final model is what is left to write."""
    if point is None or not point.at_end:
        return trainer.train(resume_from_checkpoint=checkpoint).metrics
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise LmforgeError(
            f"--resume: {checkpoint} is at the run's last step but its final model was not written; with "
            f"DeepSpeed or FSDP lmforge cannot write it from the checkpoint without training, so {NEW_RUN}"
        )
    say(f"lmforge: {checkpoint} is at the run's last step ({point.step}); writing its final model, no step more")
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE))
    return {"epoch": trainer.state.epoch}


def _started_recipe(output: Path, ledger: RunLedger) -> dict[str, Any]:
    saved = output / rundir.RECIPE_FILE
    if saved.is_file():
        return yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    if ledger.recipe is not None:
        return ledger.recipe
    raise LmforgeError(
        f"--resume: {saved} is missing and the checkpoint does not record the recipe the run started with, so "
        f"the recipe cannot be checked against it; restore {rundir.RECIPE_FILE}, or {NEW_RUN}"
    )


def _changes(started: dict[str, Any], now: dict[str, Any], recipe: Recipe) -> dict[str, list[Any]]:
    """The keys that differ, applied ones as {key: [as started, now]}; the first refused one raises."""
    before, after = _flatten(started), _flatten(now)
    applied = {}
    for key in sorted(set(before) | set(after), key=lambda k: (k.count("."), k)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if _applies(key, recipe):
            applied[key] = [old, new]
            continue
        why = WHY_REFUSED.get(key, "a resumed run continues the same training")
        raise LmforgeError(
            f"--resume: {key} is {old!r} in the run's {rundir.RECIPE_FILE} and {new!r} now; {why}. Resume with "
            f"the run's value of {key} (drop the override), or {NEW_RUN}"
        )
    return applied


def _applies(key: str, recipe: Recipe) -> bool:
    if key.startswith("data."):
        return True  # the same examples or not: the data fingerprint decides (check_same_data)
    if key == "train.epochs" and recipe.train.max_steps is not None:
        return True  # max_steps decides the length
    return any(key == k or key.startswith(k + ".") for k in APPLIED)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 1e-4, "data.train.0.path": ...}: every leaf of a recipe by its dotted key."""
    if isinstance(node, dict) and node:
        items = node.items()
    elif isinstance(node, list) and node:
        items = enumerate(node)
    else:
        return {prefix: node}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
