"""One recipe under each sharding strategy, against the same training unsharded: losses of every step and the
final weights. For a GPU session (bench/gpu_checks.sh runs it: FSDP2 and ZeRO-2/3 on one GPU, through
`lmforge train --nproc 1` as a user runs them); on the CPU only the DeepSpeed strategies run (accelerate shards
with FSDP only on accelerators).

    python bench/sharded_strategies.py                            # ddp (reference), fsdp2, zero2, zero3
    python bench/sharded_strategies.py --strategies zero2,zero3   # what runs on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from common import MAIN_PY, WORK, chat_data, model_dir, print_table, say
from safetensors.torch import load_file

STRATEGIES = {
    "fsdp2": {"strategy": "fsdp2"},
    "zero2": {"strategy": "deepspeed", "deepspeed": {"stage": 2}},
    "zero3": {"strategy": "deepspeed", "deepspeed": {"stage": 3}},
}


def recipe(work: Path, name: str, data: Path, args: argparse.Namespace) -> Path:
    spec = {
        "stage": "sft",
        "model": {"path": str(model_dir()), "dtype": args.dtype},
        "tuning": {"method": "full"},
        "data": {"train": [{"path": str(data)}], "max_length": args.max_length, "cache_dir": str(work / "cache")},
        "train": {
            "max_steps": args.steps,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup": 0,
            "save_every": args.steps,
            "log_every": 1,
            "seed": 0,
        },
        "output": str(work / name),
    }
    if name in STRATEGIES:
        spec["distributed"] = STRATEGIES[name]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def losses(run: Path, steps: int) -> list[float]:
    state = json.loads((run / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="fsdp2,zero2,zero3")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", default="fp32", help="fp32 compares closely; bf16 is what a GPU run uses")
    args = parser.parse_args()
    work = WORK / "sharded"
    work.mkdir(parents=True, exist_ok=True)
    data = chat_data(64, args.max_length).path
    rows, reference = [], None
    for name in ["ddp", *args.strategies.split(",")]:
        if name != "ddp" and name not in STRATEGIES:
            parser.error(f"--strategies: {name} is not one of {', '.join(STRATEGIES)}")
        command = [str(MAIN_PY), "-m", "lmforge.cli", "train", str(recipe(work, name, data, args)), "--overwrite"]
        command += ["--nproc", "1"] if name != "ddp" else []
        say(f"sharded_strategies: {name}: {' '.join(command[1:])}")
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            rows.append([name, "failed", "", "", f"{seconds:.0f} s", done.stderr.strip().splitlines()[-1][:80]])
            continue
        run = work / name
        weights = load_file(str(run / "model.safetensors"))
        steps = losses(run, args.steps)
        if reference is None:
            reference = (steps, weights)
            rows.append([name, " ".join(f"{x:.4f}" for x in steps), "", "", f"{seconds:.0f} s", "reference"])
            continue
        loss_diff = max(abs(a - b) for a, b in zip(steps, reference[0]))
        common = weights.keys() & reference[1].keys()
        weight_diff = max((weights[k].float() - reference[1][k].float()).abs().max().item() for k in common)
        extra = sorted(weights.keys() ^ reference[1].keys())
        note = f"saved by one run only: {', '.join(extra)}" if extra else ""
        shown = " ".join(f"{x:.4f}" for x in steps)
        rows.append([name, shown, f"{loss_diff:.1e}", f"{weight_diff:.1e}", f"{seconds:.0f} s", note])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"sharded_strategies: {args.steps} steps, batch 4, {args.max_length} tokens, {args.dtype}, on {device}")
    print_table(["strategy", "losses", "max loss diff", "max weight diff", "time", "note"], rows)
    return 0 if all(r[1] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
