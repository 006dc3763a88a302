"""What the multi-process training tests share: a small model shape, a recipe writer, and the losses and final
weights of a finished run (importable from any test: pyproject puts tests/ on pytest's pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
STEPS = 3


def write_recipe(tmp_path: Path, name: str, model: Path, data: Path, *, batch: int, method: str, packing: bool) -> Path:
    spec = {
        "stage": "sft",
        "model": {"path": str(model)},
        "tuning": {"method": method, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {
            "train": [{"path": str(data)}],
            "max_length": 64,
            "packing": packing,
            "cache_dir": str(tmp_path / f"cache-{name}"),
        },
        "train": {
            "max_steps": STEPS,
            "batch_size": batch,
            "lr": 1e-3,
            "warmup": 0,
            "save_every": 2,
            "log_every": 1,
            "loss_chunk": "off",
        },
        "output": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def step_losses(run: Path) -> list[float]:
    history = json.loads((run / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (run / "adapter_model.safetensors").is_file() else "model.safetensors"
    return load_file(str(run / name))
