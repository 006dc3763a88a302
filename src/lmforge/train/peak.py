"""The measured peak memory of a training step, the figure `lmforge plan` estimates.

The second optimizer step is measured (the first allocates the optimizer states; the second is the steady one):
- on CUDA, torch's own statistics: the allocator's high point during the step (max_memory_allocated);
- on the CPU, where torch keeps no such statistics, the bytes every live tensor holds when the step begins
  (each storage once, found through the garbage collector) plus the highest point of torch.profiler's memory
  events during the step (every allocation and free of PyTorch's CPU allocator, in order). That counts tensors
  exactly, as the CUDA figure does; the process's resident set size would add the Python heap, libraries and
  cached pages.
"""

from __future__ import annotations

import gc
import json
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback

MEASURED_STEP = 2  # the optimizer step whose peak is taken (global_step counts from 1)


class PeakProbe(TrainerCallback):
    """Measures the peak bytes of optimizer step MEASURED_STEP (see the module docstring); `peak` stays 0 until
    that step has run."""

    def __init__(self) -> None:
        self.peak = 0
        self.device = "cpu"
        self.shape = (0, 0)  # (rows, tokens a row) of the measured step's largest forward pass
        self._measuring = False
        self._baseline = 0
        self._profiler: profile | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            model.register_forward_pre_hook(self._see_batch, with_kwargs=True)

    def _see_batch(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self._measuring and isinstance(ids, torch.Tensor) and ids.numel() > self.shape[0] * self.shape[1]:
            self.shape = (ids.shape[0], ids.shape[-1]) if ids.dim() > 1 else (1, ids.shape[0])

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step != MEASURED_STEP - 1:
            return
        self._measuring = True
        if torch.cuda.is_available():
            self.device = "cuda"
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        self._baseline = live_tensor_bytes()
        self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != MEASURED_STEP:
            return
        self._measuring = False
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self.peak = self._baseline + allocation_high_point(self._profiler)
            self._profiler = None


def live_tensor_bytes() -> int:
    """Bytes of every live CPU tensor's storage, each storage once."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def allocation_high_point(profiler: profile) -> int:
    """The highest net bytes allocated while the profiler ran, from the memory events of its trace."""
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    level = high = 0
    for event in memory:
        level += event["args"]["Bytes"]
        high = max(high, level)
    return high
