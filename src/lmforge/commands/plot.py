"""`lmforge plot RUN [RUN ...] [--out FILE]`: the loss pictures again, from the runs' log histories.

One run without --out redraws its own `loss.png` and `loss.svg` in its folder (a checkpoint folder: in it, so the
run's final pictures stay as they are);
several runs are drawn into one picture, a colour each, named by their folders, and need --out.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.train import rundir
from lmforge.train.plot import FORMATS, Curves, draw


def run_plot(runs: list[Path], out: Path | None) -> list[Path]:
    """Draw the runs and return the files written."""
    if out is not None and out.suffix.lower() not in FORMATS:
        raise LmforgeError(f"--out {out}: the picture is written as .png or .svg; name the file so")
    if out is None and len(runs) > 1:
        raise LmforgeError(f"{len(runs)} runs are drawn into one picture: give it a name with --out FILE.png (or .svg)")
    curves = [_curves(run) for run in runs]
    paths = [out] if out is not None else [runs[0] / rundir.PLOT_PNG, runs[0] / rundir.PLOT_FILE]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    draw(curves, paths)
    return paths


def _curves(run: Path) -> Curves:
    if not run.is_dir():
        raise LmforgeError(f"{run}: no such run directory")
    history, source = rundir.read_log_history(run)
    curves = Curves.of(_name(run), history)
    if curves.empty():
        raise LmforgeError(f"{source}: its log history holds no training or eval loss yet; nothing to draw")
    say(f"lmforge plot: {curves.name}: {len(curves.train)} training and {len(curves.eval)} eval points from {source}")
    return curves


def _name(run: Path) -> str:
    """A run's name in the legend: its folder (`run/checkpoint-N` for a checkpoint)."""
    resolved = run.resolve()
    return f"{resolved.parent.name}/{resolved.name}" if rundir.CHECKPOINT.match(resolved.name) else resolved.name
