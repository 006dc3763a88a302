"""The loss picture: training and eval loss over optimizer steps, the learning rate on a second axis, one colour
per run; drawn with matplotlib (Agg, no display) from the Trainer's log history, as PNG or SVG.

A finished run gets `loss.png` and `loss.svg` (`write_run_plots`); `lmforge plot` draws one or several runs
again (`draw`). The SVG keeps its text as text (tick labels, legend, title), so it can be searched and restyled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = (".png", ".svg")
SIZE, DPI = (8.0, 4.5), 100  # inches at DPI: an 800 x 450 PNG
LR_GREY = "#7f7f7f"  # one run's learning rate, apart from its losses
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass(frozen=True)
class Curves:
    """What a picture shows of one run: (step, value) points of each logged series."""

    name: str
    train: list[tuple[int, float]]
    eval: list[tuple[int, float]]
    lr: list[tuple[int, float]]

    @classmethod
    def of(cls, name: str, log_history: list[dict[str, Any]]) -> Curves:
        def series(key: str) -> list[tuple[int, float]]:
            return [(h["step"], float(h[key])) for h in log_history if key in h and "step" in h]

        return cls(name, series("loss"), series("eval_loss"), series("learning_rate"))

    def empty(self) -> bool:
        return not (self.train or self.eval)


def write_run_plots(output: Path, name: str, log_history: list[dict[str, Any]], files: tuple[str, ...]) -> list[Path]:
    """Draw one run's picture into `output` under each file name in `files`; nothing when it logged no loss."""
    curves = Curves.of(name, log_history)
    if curves.empty():
        return []
    paths = [output / f for f in files]
    draw([curves], paths)
    return paths


def draw(runs: list[Curves], paths: list[Path]) -> None:
    """One picture of every run's losses and learning rate, written to each of `paths` (.png or .svg)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    several = len(runs) > 1
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lmforge", "font.size": 10}):
        figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
        loss_axis = figure.add_subplot()
        lr_axis = loss_axis.twinx()
        for i, run in enumerate(runs):
            colour = COLOURS[i % len(COLOURS)]
            prefix = f"{run.name} " if several else ""
            _line(loss_axis, run.train, colour, f"{prefix}train loss", "-", "o" if len(run.train) <= 20 else None)
            _line(loss_axis, run.eval, colour, f"{prefix}eval loss", "--", "s")
            _line(lr_axis, run.lr, colour if several else LR_GREY, f"{prefix}learning rate", ":", None)
        loss_axis.set_xlabel("optimizer step")
        loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_axis.set_ylabel("loss")
        lr_axis.set_ylabel("learning rate")
        lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        loss_axis.grid(True, alpha=0.3)
        loss_axis.set_title(", ".join(run.name for run in runs))
        handles = [h for axis in (loss_axis, lr_axis) for h in axis.get_legend_handles_labels()[0]]
        figure.legend(handles=handles, loc="outside right upper", fontsize="small")  # beside: it hides no line
        for path in paths:
            metadata = {"Date": None} if path.suffix == ".svg" else {"Software": None}  # the same bytes each time
            figure.savefig(path, format=path.suffix[1:].lower(), metadata=metadata)


def _line(axis, points, colour: str, label: str, style: str, marker: str | None) -> None:
    if points:
        steps, values = zip(*points)
        axis.plot(steps, values, style, color=colour, label=label, marker=marker, markersize=3)
