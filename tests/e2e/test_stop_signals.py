"""Stopping a run with signals through the CLI, the slow cases: a second signal stops at once, and under two
processes a signal that reaches one rank only stops both at the same step with a complete checkpoint (the first
signal's save, statuses and message: test_train_output.py; the callback: tests/train/test_preempt.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from lmforge.errors import EXIT_STOPPED
from lmforge.train.preempt import REPEAT_AFTER_S

from cli_runs import LMFORGE, recipe, write_chat

pytestmark = pytest.mark.slow


def start(args: list[str], folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*LMFORGE, *args], cwd=folder, stderr=subprocess.PIPE, text=True, env=env)


def read_until(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stderr:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"the run ended before printing {text!r}:\n{''.join(lines)}")


def test_a_second_signal_stops_at_once_without_saving(tmp_path, tiny_model_dir):
    """The run is frozen (SIGSTOP) inside the step the first signal lets finish, so the second signal comes before
    that step's end however fast the machine is. Without the second signal the run would save a checkpoint."""
    data = write_chat(tmp_path / "chat.jsonl", 96)
    path = recipe(tmp_path, tiny_model_dir, "sft", data, max_steps=3, grad_accum=8, save_every=1000)
    proc, lines = start(["train", str(path)], tmp_path), []
    read_until(proc, "step 1/3", lines)
    proc.send_signal(signal.SIGTERM)
    read_until(proc, "SIGTERM received", lines)
    proc.send_signal(signal.SIGSTOP)  # within step 2 of 8 micro-batches
    time.sleep(REPEAT_AFTER_S + 0.2)
    proc.send_signal(signal.SIGTERM)  # delivered when it runs again
    proc.send_signal(signal.SIGCONT)
    _, rest = proc.communicate(timeout=60)
    err = "".join(lines) + rest
    assert proc.returncode == EXIT_STOPPED, err
    assert "stopping now without saving more" in err
    run = tmp_path / "run-sft"
    assert not list(run.glob("checkpoint-*")) and not (run / "metrics.json").exists(), err


@pytest.mark.parametrize("target", ["launcher", "rank 1"])
def test_under_two_processes_every_rank_stops_at_the_same_step(tmp_path, tiny_model_dir, target):
    """SIGTERM to `lmforge train --nproc 2` reaches every rank (and the job exits 143, not torchrun's 1); SIGTERM
    to rank 1 only: the ranks agree at the step's end, so rank 0 stops there too and the checkpoint's collectives
    do not hang. Either way the checkpoint is complete and nothing claims a finished run."""
    data = write_chat(tmp_path / "chat.jsonl", 96)
    path = recipe(tmp_path, tiny_model_dir, "sft", data, max_steps=400, batch_size=2, save_every=1000)
    proc, lines = start(["train", str(path), "--nproc", "2"], tmp_path), []
    read_until(proc, "step 2/", lines)
    if target == "launcher":
        proc.send_signal(signal.SIGTERM)
    else:
        ranks = psutil.Process(proc.pid).children(recursive=True)
        (rank_1,) = [p for p in ranks if p.environ().get("RANK") == "1"]
        rank_1.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode == EXIT_STOPPED if target == "launcher" else proc.returncode != 0, err
    assert err.count("stopped by SIGTERM after step") == 2 and "done; final model" not in err  # both ranks
    run = tmp_path / "run-sft"
    (checkpoint,) = run.glob("checkpoint-*")
    assert (checkpoint / "trainer_state.json").is_file() and not (run / "metrics.json").exists()
