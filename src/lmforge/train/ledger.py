"""What a checkpoint carries about the whole run, so a resumed run reports the whole run and can be checked.

The Trainer's own figures (`train_loss`, `train_runtime`, the trained tokens lmforge counts) cover one `train()`
call: after a resume only the steps since the resume. `RunLedger` is a stateful callback: the Trainer saves its
`state()` into every checkpoint's trainer_state.json (`stateful_callbacks.RunLedger`), and a resume reads it back
(`from_checkpoint`). It holds:

- the run's start: the recipe as it started and its data fingerprint (what `--resume` compares against when the
  run directory's recipe.yaml or run_info.json is missing) and the number of processes;
- the sums so far: trained tokens, the loss summed over the steps, seconds of training, the number of resumes.

The loss and the tokens are taken from the training logs. A log is forced at every step that saves a checkpoint,
so a checkpoint's sums end exactly at its step, and the losses logged after a resume average the same steps as
those of a run never interrupted (without it, the first log after a resume would average only the steps since
the resume).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from lmforge.train.checkpoint_files import TRAINER_STATE


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json ({} when it has none)."""
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


class RunLedger(TrainerCallback, ExportableState):
    """The run's start and its sums so far, saved into every checkpoint (module docstring)."""

    def __init__(
        self, recipe: dict | None = None, fingerprint: str | None = None, world_size: int | None = None
    ) -> None:
        self.recipe, self.fingerprint, self.world_size = recipe, fingerprint, world_size
        self.trained_tokens = 0  # the job's (all ranks), up to `logged_step`
        self.loss_sum = 0.0  # the training loss summed over the steps up to `logged_step`
        self.logged_step = 0
        self.runtime = 0.0  # seconds of training before this process started
        self.resumes = 0
        self._began = time.perf_counter()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path) -> RunLedger:
        """The ledger saved in `checkpoint`, counting this resume. A checkpoint from before the ledger existed gives
        its sums from the logs (its runtime is then unknown and counted as 0) and no recipe or fingerprint."""
        state = read_trainer_state(checkpoint)
        saved = state.get("stateful_callbacks", {}).get(cls.__name__)
        if saved is not None:
            ledger = cls(**saved.get("args", {}))
            for name, value in saved.get("attributes", {}).items():
                setattr(ledger, name, value)
        else:
            ledger = cls()
            for logs in state.get("log_history", []):
                ledger.add_log(logs, logs.get("step", 0))
        ledger.resumes += 1
        return ledger

    def state(self) -> dict:
        return {
            "args": {"recipe": self.recipe, "fingerprint": self.fingerprint, "world_size": self.world_size},
            "attributes": {
                "trained_tokens": self.trained_tokens,
                "loss_sum": self.loss_sum,
                "logged_step": self.logged_step,
                "runtime": self.runtime + (time.perf_counter() - self._began),
                "resumes": self.resumes,
            },
        }

    def add_log(self, logs: dict[str, Any], step: int) -> None:
        """Add a training log (`loss` averaged over the steps since the previous one) to the sums."""
        if "loss" not in logs:
            return
        self.loss_sum += logs["loss"] * (step - self.logged_step)
        self.logged_step = step
        self.trained_tokens = logs.get("trained_tokens", self.trained_tokens)

    def on_train_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()
        # a resumed Trainer keeps the checkpoint's save, log and eval intervals: the recipe's apply (resume.APPLIED)
        state.compute_steps(args, state.max_steps)
        # a checkpoint saved before the ledger existed has no entry for it, and the Trainer's save expects one
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True  # the checkpoint's sums and logs end exactly at its step (module docstring)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.add_log(logs or {}, state.global_step)

    def whole_run(self, session: dict[str, Any], global_step: int, first_step: int) -> dict[str, Any]:
        """The metrics of the whole run from the Trainer's metrics of this process's `train()` call, which trained
        the steps after `first_step` (0 unless resumed)."""
        metrics = {k: v for k, v in session.items() if not k.endswith("_flos")}
        here = session.get("train_runtime", 0.0)
        runtime = self.runtime + here
        metrics["train_runtime"] = round(runtime, 4)
        if runtime > 0 and here > 0 and global_step > first_step:  # rates over the whole run
            scale = here / runtime * global_step / (global_step - first_step)
            for key in ("train_samples_per_second", "train_steps_per_second"):
                if key in metrics:
                    metrics[key] = round(metrics[key] * scale, 3)
        if self.logged_step == global_step and global_step > 0:
            metrics["train_loss"] = self.loss_sum / global_step
        metrics["resumes"] = self.resumes
        return metrics
