"""The loss picture drawn from a log history (the run's own and `lmforge plot`'s come from the same `draw`)."""

import re

from lmforge.train.plot import Curves, draw, write_run_plots

HISTORY = [
    {"step": 1, "loss": 3.0, "learning_rate": 1e-4},
    {"step": 2, "loss": 2.0, "learning_rate": 2e-4},
    {"step": 2, "eval_loss": 2.5},
    {"step": 3, "loss": 1.5, "learning_rate": 1e-4},
]


def texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_one_run_has_its_name_axes_ticks_and_legend(tmp_path):
    assert write_run_plots(tmp_path, "my-run", HISTORY, ("loss.svg", "loss.png")) == [
        tmp_path / "loss.svg",
        tmp_path / "loss.png",
    ]
    labels = texts((tmp_path / "loss.svg").read_text())
    assert {"my-run", "optimizer step", "loss", "learning rate", "train loss", "eval loss"} <= set(labels)
    assert {"1", "2", "3"} <= set(labels)  # whole steps only
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_several_runs_are_told_apart_in_the_legend(tmp_path):
    other = [{**h, "loss": h["loss"] + 1} if "loss" in h else h for h in HISTORY]
    draw([Curves.of("a", HISTORY), Curves.of("b", other)], [tmp_path / "both.svg"])
    labels = texts((tmp_path / "both.svg").read_text())
    assert {"a train loss", "a eval loss", "b train loss", "b learning rate", "a, b"} <= set(labels)


def test_the_same_history_draws_the_same_bytes(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        write_run_plots(tmp_path / name, "r", HISTORY, ("loss.svg",))
    assert (tmp_path / "one" / "loss.svg").read_bytes() == (tmp_path / "two" / "loss.svg").read_bytes()


def test_nothing_is_drawn_without_a_loss(tmp_path):
    assert write_run_plots(tmp_path, "r", [{"step": 1, "learning_rate": 1e-4}], ("loss.svg",)) == []
    assert not (tmp_path / "loss.svg").exists()
