"""What a resume reads from a checkpoint, and whether each of those files is there and reads.

The checks are cheap and need no model: a file the completion marker lists must have the listed size;
safetensors files must have a header that parses and covers the file's size; files written by `torch.save`
(optimizer.pt, scheduler.pt, rng_state*.pth, DeepSpeed's shards) must be whole zip archives (their directory
is at the end of the file, so a truncated one has none); JSON files must parse. Such checks catch what kills
and full disks leave (missing and truncated files); a file damaged in its middle is found by the load itself.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DEEPSPEED_LATEST = "latest"  # DeepSpeed's checkpoints name their step folder in this file
FSDP_PARTS = ("pytorch_model_fsdp_0", "optimizer_0")  # FSDP's sharded checkpoints (folders)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def required(checkpoint: Path) -> list[str]:
    """The files (by name) a full resume from this checkpoint reads; '|' separates alternatives."""
    needs = [TRAINER_STATE, "|".join(WEIGHTS), "rng_state.pth|rng_state_0.pth"]
    if (checkpoint / DEEPSPEED_LATEST).is_file():
        needs[1] += f"|{DEEPSPEED_LATEST}"  # ZeRO-3 keeps the weights in its own shards
        return needs
    if any((checkpoint / part).exists() for part in FSDP_PARTS):
        return [TRAINER_STATE, FSDP_PARTS[0], FSDP_PARTS[1], SCHEDULER, needs[2]]
    return [*needs, OPTIMIZER, SCHEDULER]


def is_weights(name: str) -> bool:
    """Whether a file holds the model's (or adapter's) weights, all a `--resume-weights-only` reads."""
    return name in WEIGHTS or (name.startswith("model-") and name.endswith(".safetensors"))


def missing(checkpoint: Path) -> list[str]:
    """The required files (required()) that are not in the checkpoint, each named by its first alternative."""
    needs = [need.split("|") for need in required(checkpoint)]
    return [names[0] for names in needs if not any((checkpoint / name).exists() for name in names)]


def problems(checkpoint: Path) -> list[str]:
    """What keeps this checkpoint from being resumed, in words (missing files first), or an empty list."""
    found = [f"{name} is missing" for name in missing(checkpoint)]
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        why = unreadable(path)
        if why:
            found.append(f"{path.relative_to(checkpoint).as_posix()} {why}")
    return found


def unreadable(path: Path) -> str | None:
    """Why this file cannot be what its name says (truncated, not parsing), or None when it reads."""
    name = path.name
    try:
        if name.endswith(".safetensors"):
            return _safetensors_problem(path)
        if name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith(TORCH_SUFFIXES) and not zipfile.is_zipfile(path):
            return "is not a whole torch file (truncated?)"
    except (OSError, ValueError) as err:
        return f"does not read ({err.__class__.__name__}: {err})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is {size} bytes, too short for a safetensors file (truncated?)"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return "has a safetensors header longer than the file (truncated?)"
        header = json.loads(f.read(length))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        return f"is {size} bytes but its header describes {8 + length + end} (truncated?)"
    return None
