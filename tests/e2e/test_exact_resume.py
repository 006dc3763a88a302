"""Exact resume, proven through the CLI: a run killed with SIGKILL at a random step after its first checkpoint and
resumed with `--resume` ends with the same weights, bit for bit (fp32 on the CPU), and the same per-step losses,
learning rates and gradient norms as the same run never interrupted.

The kill lands between saves: right after a step that saves nothing has logged (checkpoints every 2 steps, the
kill after an odd one), so the newest checkpoint is complete. Kills during a save are the checkpoint tests'
(a half-written checkpoint must never be resumed from); should one land in a save here all the same (a slow
machine), that half-written folder is dropped first, as the atomic checkpoints will make unnecessary.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml
from safetensors.torch import load_file

from cli_runs import LMFORGE, lmforge, write_chat
from distributed_runs import SHAPE

pytestmark = pytest.mark.slow

STEPS = 6
SAVE_EVERY = 2


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    from lmforge.quickstart.assets import build_base_model

    return build_base_model(tmp_path_factory.mktemp("resume_model"), tiny_tokenizer_dir, seed=0, shape=SHAPE)


def write_recipe(folder: Path, name: str, model: Path, data: Path, sections: dict) -> Path:
    spec = {
        "stage": "sft",
        "model": {"path": str(model), "dtype": "fp32"},
        "tuning": {"method": "full", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"train": [{"path": str(data)}], "max_length": 64, "cache_dir": str(folder / "cache")},
        "train": {
            "max_steps": STEPS,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup": 1,
            "save_every": SAVE_EVERY,
            "keep": 2,
            "log_every": 1,
        },
        "output": str(folder / name),
    }
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def killed_then_resumed(folder: Path, recipe: Path, nproc: int | None, kill_after: int | None) -> tuple[Path, int]:
    """Run `recipe`, SIGKILL the whole job after step `kill_after` (default: a random odd step past the first
    checkpoint), resume it; the run directory and the step the kill came after."""
    launch = ["--nproc", str(nproc)] if nproc else []
    kill_after = kill_after or random.choice(range(SAVE_EVERY + 1, STEPS, 2))
    proc = subprocess.Popen(
        [*LMFORGE, "train", str(recipe), *launch],
        cwd=folder,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if f"step {kill_after}/" in line:
            kill_tree(proc.pid)
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    run = folder / yaml.safe_load(recipe.read_text())["output"]
    _drop_half_written_checkpoint(run)
    assert not (run / "metrics.json").exists()
    resumed = lmforge("train", str(recipe), "--resume", *launch, cwd=folder)
    assert resumed.returncode == 0, f"killed after step {kill_after}\n{resumed.stderr}"
    assert "resuming from" in resumed.stderr
    return run, kill_after


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it (torchrun starts each rank in a session of its own), as a
    machine that goes away would: the ranks first, so none outlives torchrun."""
    job = psutil.Process(pid)
    for process in [*reversed(job.children(recursive=True)), job]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _drop_half_written_checkpoint(run: Path) -> None:
    for checkpoint in run.glob("checkpoint-*"):
        if not (checkpoint / "trainer_state.json").is_file():
            shutil.rmtree(checkpoint)


def step_logs(run: Path) -> list[tuple]:
    state = json.loads((run / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [(h["step"], h["loss"], h["learning_rate"], h["grad_norm"]) for h in state["log_history"] if "loss" in h]


def max_weight_difference(a: Path, b: Path) -> float:
    name = "adapter_model.safetensors" if (a / "adapter_model.safetensors").is_file() else "model.safetensors"
    first, second = load_file(str(a / name)), load_file(str(b / name))
    assert first.keys() == second.keys() and first
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first)


def assert_exact_resume(
    folder: Path, model: Path, data: Path, sections: dict, nproc: int | None = None, kill_after: int | None = None
) -> None:
    straight = write_recipe(folder, "straight", model, data, sections)
    launch = ["--nproc", str(nproc)] if nproc else []
    done = lmforge("train", str(straight), *launch, cwd=folder)
    assert done.returncode == 0, done.stderr
    killed = write_recipe(folder, "killed", model, data, sections)
    run, kill_after = killed_then_resumed(folder, killed, nproc, kill_after)
    difference = max_weight_difference(folder / "straight", run)
    print(f"killed after step {kill_after}: max abs weight difference {difference}")
    assert difference == 0, f"killed after step {kill_after}"
    assert step_logs(run) == step_logs(folder / "straight"), f"killed after step {kill_after}"
    assert len(step_logs(run)) == STEPS
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (folder / "straight", run)]
    assert metrics[1]["trained_tokens"] == metrics[0]["trained_tokens"] > 0
    assert metrics[1]["train_loss"] == metrics[0]["train_loss"] and metrics[1]["resumes"] == 1


CASES = {  # kept few, each run costs seconds: grad_accum and packing share one
    "full-grad-accum-2-packed": {"train": {"grad_accum": 2}, "data": {"packing": True}},
    "lora-dropout": {"tuning": {"method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}},
}


@pytest.mark.parametrize("case", CASES)
def test_a_killed_run_resumes_exactly(tmp_path, small_model, case):
    assert_exact_resume(tmp_path, small_model, write_chat(tmp_path / "chat.jsonl", 48), CASES[case])


def test_a_killed_run_resumes_exactly_across_an_epoch_boundary(tmp_path, small_model):
    """12 records in batches of 4: 3 steps an epoch, 2 epochs; killed after step 3, the run resumes from the
    mid-epoch checkpoint 2 and crosses into the second epoch (whose reshuffle must be the uninterrupted run's)."""
    data = write_chat(tmp_path / "chat.jsonl", 12)
    assert_exact_resume(tmp_path, small_model, data, {"train": {"max_steps": None, "epochs": 2}}, kill_after=3)


def test_a_killed_two_process_run_resumes_exactly(tmp_path, small_model):
    """DDP over gloo, launched by `lmforge train --nproc 2`; the kill takes the launcher, torchrun and both ranks."""
    data = write_chat(tmp_path / "chat.jsonl", 48)
    assert_exact_resume(tmp_path, small_model, data, {"train": {"batch_size": 2}}, nproc=2)
