"""Where and in which precision a loaded model runs: `--device auto|cuda|cuda:N|mps|cpu` and
`--dtype auto|bf16|fp16|fp32`.

auto takes the best the machine has: CUDA, else Apple's MPS, else the CPU; and on it bf16 where CUDA supports
it, fp16 on other GPUs, fp32 on the CPU (half precision there is slow and, for fp16, inexact).
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_device(name: str = "auto") -> torch.device:
    """The device named, checked to exist here, or the best one for auto."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LmforgeError(f"--device {name!r} is not a device; use auto, cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LmforgeError(f"--device {name}: this machine has no CUDA device (torch sees none); use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LmforgeError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (0 to N-1)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LmforgeError(f"--device {name}: MPS is not available here; use auto or cpu")
    if device.type not in ("cuda", "mps", "cpu"):
        raise LmforgeError(f"--device {name}: lmforge runs models on cuda, mps or cpu")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The precision named, or the best one for the device with auto."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in DTYPES:
        raise LmforgeError(f"--dtype {name!r} is unknown; use auto, {', '.join(DTYPES)}")
    return DTYPES[name]
