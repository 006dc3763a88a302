"""Training progress for people: a bar on a terminal, plain lines elsewhere (CI, pipes, log files).

On a terminal (stderr is a TTY) one tqdm bar shows step/total, the last logged loss and trained tokens/s, and the
time left; eval results are printed as lines above it. Elsewhere `callbacks.ProgressPrinter` prints one line per
log event, which a log file keeps readable. Only rank 0 shows either (console.say's rule).
"""

from __future__ import annotations

import os
import sys

from lmforge.train.callbacks import ProgressPrinter

UNKNOWN_SIZE = {"ncols": 100, "nrows": 24}  # a terminal that reports 0 x 0 (`script`'s pty): tqdm would draw nothing


def progress_callback() -> ProgressPrinter:
    """A bar when stderr is a terminal, else the printer of plain lines."""
    return ProgressBar() if sys.stderr.isatty() else ProgressPrinter()


class ProgressBar(ProgressPrinter):
    """The printer's figures as one tqdm bar on stderr (a ProgressPrinter, so removing that class removes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if os.environ.get("RANK", "0") != "0":
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            unit="step",
            desc="",
            file=sys.stderr,
            dynamic_ncols=_size_known(),
            **({} if _size_known() else UNKNOWN_SIZE),
            bar_format="step {n_fmt}/{total_fmt} |{bar}| {desc}{elapsed} elapsed, eta {remaining}",
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None:
            return
        logs = logs or {}
        if "loss" in logs:
            tokens = logs.get("trained_tokens_per_second", 0)
            self.bar.set_description_str(f"loss {logs['loss']:.4f} | {tokens:,.0f} trained tok/s | ", refresh=True)
        elif "eval_loss" in logs:
            line = f"  step {state.global_step}/{state.max_steps} | eval loss {logs['eval_loss']:.4f}"
            self.bar.write(line, file=sys.stderr)  # above the bar, which is drawn again below it

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _size_known() -> bool:
    try:
        return min(os.get_terminal_size(sys.stderr.fileno())) > 0
    except (OSError, ValueError):
        return False
