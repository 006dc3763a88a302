"""Experiment trackers (`train.report_to`): TensorBoard, Weights & Biases, MLflow, SwanLab, through transformers'
own integration callbacks.

Every tracker receives the Trainer's log events, so each metric is the value in trainer_state.json's log history
(and on the console): `loss`, `learning_rate`, `grad_norm`, lmforge's `trained_tokens_per_second`, `eval_loss`, the
preference stages' `rewards/chosen` and the rest. All of them name it as TensorBoard and W&B do:
`train/<key>` for training events, `eval/<key>` for `eval_<key>` (`train/loss`, `eval/loss`, `train/rewards/margins`);
MLflow's callback alone logs the bare keys, so lmforge gives it the same names.

lmforge builds the callbacks itself and leaves TrainingArguments.report_to at "none" (the Trainer would otherwise
build a second, unconfigured set): TensorBoard then writes into the run directory, `<output>/tensorboard`
(rundir.TENSORBOARD_DIR), instead of `<output>/runs/<date>_<host>`. W&B, MLflow and SwanLab read their own
environment (WANDB_MODE=offline, WANDB_PROJECT, MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, ...). Only rank 0
gets the callbacks, so a job of several processes reports once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations import MLflowCallback, SwanLabCallback, TensorBoardCallback, WandbCallback
from transformers.integrations.integration_utils import rewrite_logs

from lmforge.errors import LmforgeError
from lmforge.train import ranks
from lmforge.train.rundir import TENSORBOARD_DIR

# tracker -> (the module it needs, the pip install that brings it)
NEEDS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "'lmforge[wandb]'"),
    "mlflow": ("mlflow", "'lmforge[mlflow]'"),
    "swanlab": ("swanlab", "'lmforge[swanlab]'"),
}


def check_trackers(names: list[str]) -> None:
    """Every tracker in train.report_to can be imported; called before any data work, so a missing package is
    said in a second, not after the tokenisation."""
    missing = [name for name in names if importlib.util.find_spec(NEEDS[name][0]) is None]
    if missing:
        installs = " ".join(NEEDS[name][1] for name in missing)
        raise LmforgeError(
            f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
            f"pip install {installs}, or drop {'it' if len(missing) == 1 else 'them'} from train.report_to "
            "(train.report_to=none reports to no tracker)"
        )


def tracker_callbacks(names: list[str], output: Path) -> list[TrainerCallback]:
    """transformers' callback of each tracker in train.report_to, on rank 0 (none on the other ranks)."""
    if not ranks.is_main():
        return []
    make = {
        "tensorboard": lambda: RunTensorBoard(output / TENSORBOARD_DIR),
        "wandb": RunWandb,
        "mlflow": SameNamesMLflow,
        "swanlab": RunSwanLab,
    }
    return [make[name]() for name in names]


class SaysWhyItCannotStart:
    """A tracker that fails to start (a bad setting in its environment, no login, an unreachable server) is the
    user's to fix: said as an lmforge error naming the tracker, before the first step (so the start is undone),
    not as a traceback from inside it."""

    tracker = ""

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            return super().on_train_begin(args, state, control, **kwargs)
        except Exception as err:
            raise LmforgeError(
                f"train.report_to: {self.tracker} could not start ({type(err).__name__}: {str(err).strip()}); fix "
                f"its settings (its environment variables, a login), or drop {self.tracker} from train.report_to"
            ) from None


class RunWandb(SaysWhyItCannotStart, WandbCallback):
    tracker = "wandb"


class RunSwanLab(SaysWhyItCannotStart, SwanLabCallback):
    tracker = "swanlab"


class RunTensorBoard(SaysWhyItCannotStart, TensorBoardCallback):
    """transformers' TensorBoardCallback writing into the given folder (it reads its folder from the
    TENSORBOARD_LOGGING_DIR variable, else picks `<output_dir>/runs/<date>_<host>`)."""

    tracker = "tensorboard"

    def __init__(self, logging_dir: Path) -> None:
        super().__init__()
        self.logging_dir = str(logging_dir)


class SameNamesMLflow(SaysWhyItCannotStart, MLflowCallback):
    """MLflow with the names every other tracker uses (train/loss, eval/loss), not the bare keys."""

    tracker = "mlflow"

    def on_log(self, args, state, control, logs, model=None, **kwargs):
        super().on_log(args, state, control, rewrite_logs(logs), model=model, **kwargs)
