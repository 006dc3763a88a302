"""`lmforge plan --measure`: train the recipe's first optimizer steps in a scratch folder and measure the peak.

The recipe's own output is never touched: the steps run into a temporary folder that is removed afterwards,
with the recipe's model, data, batch, tuning and precision, and only the length of the run (and its saving and
evaluation) changed. See train/peak.py for what is measured.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from transformers import set_seed

from lmforge.config.recipe import Recipe
from lmforge.config.settings import data_settings
from lmforge.console import say
from lmforge.data.build.pipeline import build_examples
from lmforge.model.load import load_tokenizer, run_template
from lmforge.train.callbacks import ProgressPrinter
from lmforge.train.peak import MEASURED_STEP, PeakProbe
from lmforge.train.run import make_trainer, printer_class, resolve_local_paths


@dataclass(frozen=True)
class Measured:
    peak: int  # bytes
    device: str  # cuda or cpu
    step: int  # the optimizer step measured
    rows: int  # of its largest forward pass
    seq: int  # tokens a row of that pass (padded to its longest sample, or packed)


def measure_peak(recipe: Recipe) -> Measured:
    """Train MEASURED_STEP optimizer steps of the recipe into a scratch folder; the peak of the last one."""
    recipe = resolve_local_paths(recipe)
    say(f"lmforge plan: measuring: training {MEASURED_STEP} optimizer steps of the recipe in a scratch folder")
    with tempfile.TemporaryDirectory(prefix="lmforge-plan-") as scratch:
        beyond = MEASURED_STEP + 1
        train = recipe.train.model_copy(
            update={
                "max_steps": MEASURED_STEP,
                "save_every": beyond,
                "eval_every": beyond,
                "profile_steps": 0,
                "report_to": [],  # two scratch steps are no experiment to track
            }
        )
        short = recipe.model_copy(update={"output": scratch, "train": train})
        tokenizer = load_tokenizer(short.model)
        data = build_examples(data_settings(short, run_template(short.model, short.stage, tokenizer)), tokenizer)
        set_seed(short.train.seed)
        probe = PeakProbe()
        trainer = make_trainer(short, tokenizer, data, extra_callbacks=(probe,))
        trainer.remove_callback(ProgressPrinter)
        trainer.remove_callback(printer_class())
        trainer.train()
    rows, seq = probe.shape
    return Measured(peak=probe.peak, device=probe.device, step=MEASURED_STEP, rows=rows, seq=seq)
