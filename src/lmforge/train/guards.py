"""What every lmforge Trainer adds to transformers' loop to keep a run safe: checkpoints written whole or not at
all (checkpoints.py) and the NaN/inf guard (nan_guard.py). A mixin placed before `Trainer` by LmforgeTrainer and
PreferenceTrainer; it overrides the Trainer's own extension points (`training_step`, `_get_grad_norm`,
`_save_checkpoint`) and nothing else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.train import checkpoints, ranks
from lmforge.train.checkpoint_files import TRAINER_STATE
from lmforge.train.nan_guard import NanWatch, OnNan, drop_gradients

WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)  # torch.save reports a failed write as a RuntimeError


class RunGuards:
    """The atomic checkpoint save and the NaN guard, for a `transformers.Trainer` subclass (module docstring)."""

    def __init__(self, *args: Any, on_nan: OnNan = "stop", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nan_watch = NanWatch(on_nan)
        self.earlier_checkpoints: list[Path] = []  # a --resume-weights-only restart's old ones: moved at its first save
        if on_nan == "skip" and self.is_deepspeed_enabled:
            raise LmforgeError(
                "train.on_nan: skip cannot drop a step's update under DeepSpeed, whose optimizer keeps its own "
                "gradients; use train.on_nan: stop (DeepSpeed's fp16 loss scaling skips overflowing steps itself)"
            )

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.nan_watch.see_loss(loss)
        return loss

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm=None):
        """The gradient norm before clipping, the last thing the Trainer computes before the optimizer step."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        watch_grad = getattr(self.accelerator, "scaler", None) is None
        if self.nan_watch.poisoned(grad_norm, watch_grad=watch_grad):
            step = self.state.global_step + 1
            drop_gradients(model)
            self.nan_watch.record(step)
            if self.nan_watch.mode == "skip":
                say(f"lmforge: step {step}: NaN/inf loss or gradient; its update is skipped (train.on_nan: skip)")
            else:
                self.control.should_training_stop = True
        return grad_norm

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write `.checkpoint-N.partial` on every rank, then rank 0 marks it complete and renames it."""
        if self.nan_watch.tripped_at is not None:
            return  # weights after a NaN/inf are never saved; run.py stops the run with the step
        output = Path(self.args.output_dir)
        step = self.state.global_step
        staging, final = checkpoints.partial_path(output, step), checkpoints.final_path(output, step)
        main = self.args.should_save
        # Each stage ends in a vote (ranks.all_ok) instead of a barrier, so a rank that cannot write (full disk,
        # read-only folder) stops every rank with the message instead of leaving the others waiting.
        error = _attempt(lambda: _fresh_folder(staging)) if main else None
        if ranks.all_ok(error is None):
            error = _attempt(lambda: self._write_checkpoint(model, staging, final))
            if ranks.all_ok(error is None) and main:
                error = _attempt(lambda: self._complete(staging, final))
        if not ranks.all_ok(error is None):
            raise self._save_failed(staging, final, error)
        if main:
            checkpoints.rotate(output, self.args.save_total_limit)
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))

    def _complete(self, staging: Path, final: Path) -> None:
        self._move_earlier_checkpoints(final.parent)
        checkpoints.complete(staging, final)

    def _write_checkpoint(self, model: torch.nn.Module, staging: Path, final: Path) -> None:
        """The files of Trainer._save_checkpoint (model, optimizer, scheduler, scaler, RNG, trainer state)."""
        self.store_flos()
        self.save_model(str(staging), _internal_call=True)
        if self.state.best_global_step:
            best = checkpoints.final_path(final.parent, self.state.best_global_step)
            if best == final or best.exists():
                self.state.best_model_checkpoint = str(best)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        if self.args.should_save:
            self._export_callback_states()
            self.state.save_to_json(os.path.join(staging, TRAINER_STATE))

    def _export_callback_states(self) -> None:
        """As Trainer._save_checkpoint does: the state of callbacks that keep one (ExportableState) and control."""
        from transformers.trainer_callback import ExportableState

        for cb in [c for c in [*self.callback_handler.callbacks, self.control] if isinstance(c, ExportableState)]:
            name = cb.__class__.__name__
            if isinstance(self.state.stateful_callbacks[name], list):
                self.state.stateful_callbacks[name].append(cb.state())
            else:
                self.state.stateful_callbacks[name] = cb.state()

    def _move_earlier_checkpoints(self, output: Path) -> None:
        """A --resume-weights-only restart numbers its steps from 0 again: at its first complete save, the
        checkpoints of the run before it move to a folder of their own (kept, never deleted by lmforge)."""
        if not self.earlier_checkpoints:
            return
        k = 1
        while (output / f"before-restart-{k}").exists():
            k += 1
        folder = output / f"before-restart-{k}"
        folder.mkdir()
        for path in self.earlier_checkpoints:
            if path.exists():
                os.rename(path, folder / path.name)
        say(f"lmforge: the checkpoints from before the weights-only restart are kept in {folder}")
        self.earlier_checkpoints = []

    def _save_failed(self, staging: Path, final: Path, error: BaseException | None) -> LmforgeError:
        """The message for a save that could not be written (full disk, read-only folder); its partial goes."""
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        what = f"{error.__class__.__name__}: {error}" if error is not None else "another rank could not write its files"
        newest = checkpoints.newest_complete(final.parent)
        then = "start the run again with --overwrite"
        if newest is not None:
            then = f"continue from {newest.name} with `lmforge train RECIPE --resume`"
        return LmforgeError(
            f"cannot save checkpoint {final.name} of step {self.state.global_step} in {final.parent} ({what}); "
            f"nothing of it was kept, so no half-written checkpoint looks complete. Free disk space or make "
            f"{final.parent} writable, then {then}"
        )


def _attempt(write: Callable[[], None]) -> BaseException | None:
    """Run a step of a save; the error that stopped it (a failed write), or None."""
    try:
        write()
    except WRITE_ERRORS as err:
        return err
    return None


def _fresh_folder(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
