"""Checkpoints, the run lock and the NaN guard as a user meets them through `lmforge train`: kills during saves,
damaged and missing files, a second run on the same folder, a full disk, a loss that turns NaN."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.errors import EXIT_USER_ERROR
from lmforge.train import checkpoints
from lmforge.train.lock import LOCK_FILE

from cli_runs import LMFORGE, lmforge, recipe, write_text
from run_dirs import hold_lock

POISON = ("train.lr=1e30", "train.warmup=0", "train.scheduler=constant")  # step 1's update makes step 2 NaN


def digest(folder: Path) -> dict[str, str]:
    """Every file of the run (the lock file aside) by its relative path, with the sha256 of its bytes."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_FILE]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def finite(checkpoint: Path) -> bool:
    """Whether every tensor of the checkpoint's weights and optimizer state is finite."""
    weights = load_file(str(checkpoint / "model.safetensors"))
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    moments = [t for s in optimizer["state"].values() for t in s.values() if torch.is_tensor(t)]
    return all(torch.isfinite(t).all() for t in [*weights.values(), *moments])


def complete_steps(run: Path) -> list[int]:
    return [checkpoints.step_of(p) for p in checkpoints.checkpoint_dirs(run) if checkpoints.is_complete(p)]


@pytest.mark.slow  # the lock between processes is in the default run: tests/train/test_lock.py
def test_a_second_run_on_a_locked_output_exits_2_naming_the_pid_and_changes_nothing(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    run = tmp_path / "run-pt"
    run.mkdir()
    (run / "run_info.json").write_text("{}")  # an lmforge run, which --overwrite would replace
    before = digest(run)
    proc = hold_lock(run)
    try:
        out = lmforge("train", str(path), "--overwrite", cwd=tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert f"in use by another lmforge run (pid {proc.pid} on" in out.stderr
    assert digest(run) == before and not (tmp_path / ".run-pt.lmforge-old").exists()


def test_nan_stops_the_run_at_its_step_and_the_newest_checkpoint_is_the_last_good_one(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=4, save_every=1)
    out = lmforge("train", str(path), *POISON, cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert "became NaN/inf at step 2" in out.stderr and "lower train.lr" in out.stderr.lower()
    run = tmp_path / "run-pt"
    assert complete_steps(run) == [1] and not checkpoints.partial_dirs(run)
    assert finite(run / "checkpoint-1")
    assert not (run / "model.safetensors").exists() and not (run / "metrics.json").exists()
    assert "done; final model" not in out.stderr


@pytest.mark.slow
def test_skip_mode_skips_the_poisoned_steps_finishes_and_counts_them(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=4, save_every=2)
    out = lmforge("train", str(path), *POISON, "train.on_nan=skip", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run-pt"
    assert "3 of 4 optimizer steps had a NaN/inf" in out.stderr
    assert json.loads((run / "metrics.json").read_text())["nan_skipped_steps"] == 3
    assert finite(run / "checkpoint-4")
    assert all(torch.isfinite(t).all() for t in load_file(str(run / "model.safetensors")).values())


@pytest.fixture(scope="module")
def pt_checkpoints_once(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished pretraining run of 4 steps with a complete checkpoint after each, made once."""
    folder = tmp_path_factory.mktemp("pt_checkpoints")
    path = recipe(folder, tiny_model_dir, "pt", write_text(folder / "text.jsonl"), max_steps=4, save_every=1, keep=4)
    out = lmforge("train", str(path), cwd=folder)
    assert out.returncode == 0, out.stderr
    assert complete_steps(folder / "run-pt") == [1, 2, 3, 4]
    return folder


@pytest.fixture
def pt_run(tmp_path, pt_checkpoints_once) -> tuple[Path, Path]:
    """(the recipe, its run directory), a copy of `pt_checkpoints_once` in this test's folder."""
    shutil.copytree(pt_checkpoints_once, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "pt.yaml"
    path.write_text(path.read_text().replace(str(pt_checkpoints_once), str(tmp_path)))
    return path, tmp_path / "run-pt"


@pytest.mark.slow
def test_a_half_written_newest_checkpoint_is_skipped_with_a_line_and_the_previous_one_resumes(pt_run):
    path, run = pt_run
    os.rename(run / "checkpoint-4", checkpoints.partial_path(run, 4))  # killed before the rename
    (run / "checkpoint-3" / checkpoints.MARKER).unlink()  # and an older lmforge's save, cut short
    (run / "checkpoint-3" / "optimizer.pt").write_bytes(b"PK")
    out = lmforge("train", str(path), "--resume", cwd=path.parent)
    assert out.returncode == 0, out.stderr
    assert "skipping .checkpoint-4.partial: a save that did not finish" in out.stderr
    assert "skipping checkpoint-3: no completion marker and optimizer.pt is not a whole torch file" in out.stderr
    assert f"resuming from {run / 'checkpoint-2'}" in out.stderr and "removed .checkpoint-4.partial" in out.stderr
    assert complete_steps(run) == [1, 2, 3, 4] and not checkpoints.partial_dirs(run)


@pytest.mark.slow
def test_a_missing_optimizer_is_an_error_naming_it_and_weights_only_restarts_from_its_weights(pt_run):
    path, run = pt_run
    (run / "checkpoint-4" / "optimizer.pt").unlink()
    out = lmforge("train", str(path), "--resume", cwd=path.parent)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert f"{run / 'checkpoint-4' / 'optimizer.pt'} is missing" in out.stderr and "checkpoint-3" in out.stderr
    out = lmforge("train", str(path), "--resume-weights-only", cwd=path.parent)
    assert out.returncode == 0, out.stderr
    assert "loaded the weights of" in out.stderr and "start again from step 0" in out.stderr
    assert "step 1/4" in out.stderr  # a new schedule
    kept = run / "before-restart-1"
    assert sorted(p.name for p in kept.iterdir()) == [f"checkpoint-{n}" for n in (1, 2, 3, 4)]
    assert complete_steps(run) == [1, 2, 3, 4]  # the new run's
    assert json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"][0]["step"] == 1


@pytest.mark.slow
def test_a_truncated_model_file_is_a_message_naming_it_not_a_traceback(pt_run):
    path, run = pt_run
    weights = run / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = lmforge("train", str(path), "--resume", cwd=path.parent)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert f"{weights} is 1000 bytes" in out.stderr and "earlier checkpoint-3" in out.stderr


def _full_disk_at(limit: int):
    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_a_message_and_leaves_no_complete_looking_checkpoint(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=2, save_every=1)
    model_bytes = (tiny_model_dir / "model.safetensors").stat().st_size  # the weights fit, the optimizer does not
    out = subprocess.run(
        [*LMFORGE, "train", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_full_disk_at(model_bytes + 2**20),
    )
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert "cannot save checkpoint checkpoint-1 of step 1" in out.stderr and "Free disk space" in out.stderr
    run = tmp_path / "run-pt"
    assert not checkpoints.checkpoint_dirs(run) and not checkpoints.partial_dirs(run)


@pytest.mark.slow
def test_a_read_only_output_is_a_message(tmp_path, tiny_model_dir):
    if os.geteuid() == 0:
        pytest.skip("runs as root, for whom a folder without write permission is still writable")
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    run = tmp_path / "run-pt"
    run.mkdir()
    run.chmod(0o555)
    try:
        out = lmforge("train", str(path), cwd=tmp_path)
    finally:
        run.chmod(0o755)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert f"output {run}: cannot" in out.stderr and "writable location" in out.stderr


@pytest.mark.slow
def test_killing_saves_midway_always_leaves_a_checkpoint_to_resume_from(tmp_path, tiny_model_dir):
    """Ten runs killed with SIGKILL while a checkpoint is being written, each resumed: every resume must start
    from the newest complete checkpoint and finish."""
    data = write_text(tmp_path / "text.jsonl")
    path = recipe(tmp_path, tiny_model_dir, "pt", data, max_steps=6, save_every=1, keep=2)
    run, trials, usable, caught = tmp_path / "run-pt", 10, 0, 0
    for trial in range(trials):
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.Popen([*LMFORGE, "train", str(path)], cwd=tmp_path, stderr=subprocess.DEVNULL)
        nth, seen = 2 + trial % 3, set()  # kill during the 2nd, 3rd or 4th save
        while proc.poll() is None and len(seen) < nth:
            seen.update(p.name for p in checkpoints.partial_dirs(run))
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        caught += bool(checkpoints.partial_dirs(run))
        newest = complete_steps(run)[-1]
        out = lmforge("train", str(path), "--resume", cwd=tmp_path)
        resumed = f"resuming from {run / f'checkpoint-{newest}'}" in out.stderr
        usable += out.returncode == 0 and resumed and (run / "model.safetensors").exists()
        assert len(complete_steps(run)) <= 2 and complete_steps(run)[-1] == 6  # train.keep, never the newest
    print(f"kill during save: {trials} trials, {caught} killed with a partial save on disk, {usable} resumed")
    assert usable == trials and caught >= trials // 2


@pytest.mark.slow
def test_a_nan_at_the_first_step_of_an_overwrite_leaves_the_old_run_as_it_was(pt_run, tiny_model_dir):
    path, run = pt_run
    broken = path.parent / "inf-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    norm = next(k for k in weights if "norm" in k)
    weights[norm] = torch.full_like(weights[norm], float("inf"))  # every forward pass gives a NaN loss
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    before = digest(run)
    out = lmforge("train", str(path), "--overwrite", f"model.path={broken}", cwd=path.parent)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr, out.stderr
    assert "became NaN/inf at step 1" in out.stderr and "left as it was before the run" in out.stderr
    assert digest(run) == before and not (path.parent / ".run-pt.lmforge-old").exists()
