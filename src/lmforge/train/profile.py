"""train.profile_steps: where the time of a training step goes, recorded with torch.profiler.

The first WARMUP steps are left out (they allocate memory, pick kernels and, with train.compile, compile);
the next `profile_steps` optimizer steps are recorded on the CPU and, where there is one, the GPU. Written
to <output>/profile/:
- summary.txt: the recorded steps, their mean wall time, and the operators by self time on the device
  (the GPU, else the CPU), the table torch.profiler prints;
- trace.json: the timeline, for chrome://tracing or https://ui.perfetto.dev.
In a run of several processes each records its own steps, into summary-rank<N>.txt and trace-rank<N>.json.
Only the recorded steps pay the profiler's overhead; the rest of the run is unaffected.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule
from transformers import TrainerCallback

from lmforge.config.recipe import PROFILE_WARMUP_STEPS as WARMUP
from lmforge.console import say

TABLE_ROWS = 30


class StepProfiler(TrainerCallback):
    """Records `steps` optimizer steps after the first WARMUP of the run (see the module docstring)."""

    def __init__(self, steps: int, directory: Path) -> None:
        self.steps, self.directory = steps, Path(directory)
        self.profiler: profile | None = None
        self.recorded: list[tuple[int, float]] = []  # (global step: a resumed run does not start at 1, seconds)
        self._seen = 0
        self._step_started = 0.0
        self._suffix = ""  # -rank<N> in a run of several processes

    def on_train_begin(self, args, state, control, **kwargs):
        self._suffix = f"-rank{args.process_index}" if args.world_size > 1 else ""
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        steps = schedule(wait=0, warmup=WARMUP, active=self.steps, repeat=1)
        self.profiler = profile(activities=activities, schedule=steps, on_trace_ready=self._write)
        self.profiler.start()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None:
            return
        self._seen += 1
        if self._seen > WARMUP:
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the step's kernels are done before its wall time is taken
            self.recorded.append((state.global_step, time.perf_counter() - self._step_started))
        self.profiler.step()  # after the last recorded step this writes the files (on_trace_ready)
        if self._seen >= WARMUP + self.steps:
            self._stop()

    def on_train_end(self, args, state, control, **kwargs):
        if self.profiler is None:
            return
        if self._seen <= WARMUP:
            say(
                f"lmforge: train.profile_steps: the run ended after {self._seen} steps, before any step after the "
                f"{WARMUP} warm-up steps; nothing recorded. Train at least {WARMUP + self.steps} steps"
            )
        self._stop()  # a run that ends inside the recorded steps writes the steps it had

    def _stop(self) -> None:
        profiler, self.profiler = self.profiler, None
        profiler.stop()

    def _write(self, profiler: profile) -> None:
        if not self.recorded:  # stopped before the first recorded step: there is nothing to write
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        trace, summary = self.directory / f"trace{self._suffix}.json", self.directory / f"summary{self._suffix}.txt"
        profiler.export_chrome_trace(str(trace))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        recorded, steps = len(self.recorded), f"{self.recorded[0][0]}-{self.recorded[-1][0]}"
        mean = sum(seconds for _, seconds in self.recorded) / recorded
        header = (
            f"steps {steps} recorded ({recorded} of train.profile_steps {self.steps}), "
            f"after {WARMUP} warm-up steps; mean wall time {mean:.4f} s a step (profiler overhead included)\n"
            f"operators by self {device} time:\n"
        )
        sort_by = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
        summary.write_text(
            header + profiler.key_averages().table(sort_by=sort_by, row_limit=TABLE_ROWS), encoding="utf-8"
        )
        say(f"lmforge: profiled steps {steps}: {summary}, timeline {trace}")
