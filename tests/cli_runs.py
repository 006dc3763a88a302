"""What end-to-end tests share: the `lmforge` command run as a user runs it, and small recipes and data files for
it (importable from any test: pyproject puts tests/ on pytest's pythonpath)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

LMFORGE = [sys.executable, "-m", "lmforge.cli"]


def lmforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LMFORGE, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def write_chat(path: Path, n: int = 24) -> Path:
    with path.open("w") as f:
        for i in range(n):
            a, b = i % 7 + 1, i % 5 + 2
            messages = [
                {"role": "system", "content": "You are a calculator."},
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                {"role": "user", "content": f"And {a} times {b}?"},
                {"role": "assistant", "content": f"{a} times {b} is {a * b}."},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def write_text(path: Path, n: int = 40) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"{i} plus {i + 1} is {2 * i + 1}. " * (1 + i % 3)}) + "\n")
    return path


def recipe(tmp_path: Path, model_dir: Path, stage: str, data: Path, **train) -> Path:
    spec = {
        "stage": stage,
        "model": {"path": str(model_dir)},
        "tuning": {"method": "full" if stage == "pt" else "lora", "lora": {"r": 4, "alpha": 8}},
        "data": {"train": [{"path": str(data)}], "max_length": 64},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "save_every": 2, "keep": 3, "log_every": 1, **train},
        "output": str(tmp_path / f"run-{stage}"),
    }
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def losses(state_file: Path) -> dict[int, float]:
    history = json.loads(state_file.read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}
