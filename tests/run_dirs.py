"""Run folders for tests: checkpoints with the files transformers writes (real formats, small), and another
process holding a run lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmforge.train import checkpoints


def write_files(folder: Path, step: int) -> Path:
    """The files transformers writes into a checkpoint, in their real formats, at a small size."""
    folder.mkdir(parents=True)
    save_file({"w": torch.full((64, 64), float(step))}, str(folder / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64, 64)}}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def saved(output: Path, step: int) -> Path:
    """A checkpoint saved as lmforge saves one: written as .partial, then completed."""
    partial = write_files(checkpoints.partial_path(output, step), step)
    checkpoints.complete(partial, checkpoints.final_path(output, step))
    return checkpoints.final_path(output, step)


HOLD = "import sys, time; from pathlib import Path; from lmforge.train.lock import RunLock; "
HOLD += "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(600)"


def hold_lock(output: Path) -> subprocess.Popen:
    """Another process holding the run lock of `output` until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(output)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc
