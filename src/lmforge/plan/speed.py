"""Training tokens per second from FLOPs: the work per token over an accelerator's peak at an assumed MFU.

Work per token follows the PaLM paper's accounting (Chowdhery et al. 2022, appendix B): 2 FLOPs per weight for
the forward pass, 2 for the gradient of the input and 2 for the gradient of the weight, so 6·N for full
training, plus 12·layers·(heads x head size)·length for attention. Frozen weights skip their weight gradient
(LoRA, QLoRA, frozen layers: 4·N on those); activation checkpointing runs the forward pass twice (2·N more);
a DPO or KTO reference model that is not precomputed adds a forward pass (2·N) per token.

MFU (model FLOPs utilisation) is an assumption, not a measurement: DEFAULT_MFU is what well-tuned dense
training reaches on current GPUs (published figures run 33-46 %); lmforge measured 13.4 % for a 0.5B-shape SFT
on an H200 (README), so small models should expect less. Pass --mfu to use your own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge.errors import LmforgeError
from lmforge.plan.memory import ADAPTER_METHODS, Setup

if TYPE_CHECKING:  # counts.py builds models (torch, transformers): the CLI reads this module's constants
    from lmforge.plan.counts import Counts

DEFAULT_MFU = 0.35
GIB = 2**30


@dataclass(frozen=True)
class Gpu:
    peak_bf16: float  # dense bf16 tensor FLOP/s (no sparsity)
    memory: int  # bytes
    source: str


# Peak dense bf16 throughput and memory from each vendor's datasheet.
GPUS = {
    "h200": Gpu(989e12, 141 * GIB, "NVIDIA H200 Tensor Core GPU datasheet (SXM: 989 TFLOPS bf16 dense, 141 GB)"),
    "h100": Gpu(989e12, 80 * GIB, "NVIDIA H100 Tensor Core GPU datasheet (SXM: 989 TFLOPS bf16 dense, 80 GB)"),
    "h100-pcie": Gpu(756e12, 80 * GIB, "NVIDIA H100 datasheet (PCIe: 756 TFLOPS bf16 dense, 80 GB)"),
    "a100": Gpu(312e12, 80 * GIB, "NVIDIA A100 Tensor Core GPU datasheet (312 TFLOPS bf16 dense, 80 GB)"),
    "a100-40gb": Gpu(312e12, 40 * GIB, "NVIDIA A100 Tensor Core GPU datasheet (312 TFLOPS bf16 dense, 40 GB)"),
    "l40s": Gpu(362e12, 48 * GIB, "NVIDIA L40S datasheet (362 TFLOPS bf16 dense, 48 GB)"),
    "a10": Gpu(125e12, 24 * GIB, "NVIDIA A10 datasheet (125 TFLOPS bf16 dense, 24 GB)"),
    "rtx4090": Gpu(165e12, 24 * GIB, "NVIDIA Ada GPU architecture whitepaper (RTX 4090: 165 TFLOPS bf16, 24 GB)"),
    "mi300x": Gpu(1307e12, 192 * GIB, "AMD Instinct MI300X datasheet (1307 TFLOPS bf16 dense, 192 GB)"),
}
DEFAULT_GPU = "h100"


@dataclass(frozen=True)
class Speed:
    flops_per_token: float
    tokens_per_second: float  # per device
    step_seconds: float  # one optimizer step of batch x grad_accum rows on each device


def gpu(name: str) -> Gpu:
    if name not in GPUS:
        raise LmforgeError(f"--gpu {name}: unknown; expected one of {', '.join(GPUS)}")
    return GPUS[name]


def flops_per_token(counts: Counts, setup: Setup) -> float:
    """Training FLOPs per token processed (see the module docstring)."""
    n = counts.matmul
    frozen_share = 0.0 if setup.method in ("full",) else 1.0 - min(1.0, counts.trainable / max(n, 1))
    if setup.method in ADAPTER_METHODS:
        frozen_share = 1.0
    passes = 6 - 2 * frozen_share  # forward, input gradient, and the weight gradient where weights train
    if setup.checkpointing:
        passes += 2
    if setup.reference in ("copy", "adapter"):
        passes += 2
    adapters = counts.trainable if setup.method in ADAPTER_METHODS else 0
    attention = 12 * counts.shape.layers * counts.shape.q_dim * setup.seq
    return passes * n + 6 * adapters + attention


def speed(counts: Counts, setup: Setup, accelerator: Gpu, mfu: float, grad_accum: int) -> Speed:
    if not 0 < mfu <= 1:
        raise LmforgeError(f"--mfu {mfu}: the share of peak FLOPs reached, between 0 and 1 (e.g. 0.35)")
    per_token = flops_per_token(counts, setup)
    rate = mfu * accelerator.peak_bf16 / per_token
    return Speed(per_token, rate, setup.rows * setup.seq * grad_accum / rate)
