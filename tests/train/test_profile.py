"""StepProfiler driven as the Trainer drives it, without a model: which steps it records and where it writes."""

from types import SimpleNamespace

import torch

from lmforge.train.profile import WARMUP, StepProfiler


def drive(profiler: StepProfiler, steps: int, world_size: int = 1, process_index: int = 0) -> None:
    args, state = SimpleNamespace(world_size=world_size, process_index=process_index), SimpleNamespace(global_step=0)
    profiler.on_train_begin(args, state, None)
    for _ in range(steps):
        profiler.on_step_begin(args, state, None)
        torch.randn(64, 64) @ torch.randn(64, 64)
        state.global_step += 1
        profiler.on_step_end(args, state, None)
    profiler.on_train_end(args, state, None)


def test_each_process_of_a_distributed_run_writes_its_own_files(tmp_path):
    drive(StepProfiler(2, tmp_path), WARMUP + 3, world_size=2, process_index=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary-rank1.txt", "trace-rank1.json"]
    summary = (tmp_path / "summary-rank1.txt").read_text()
    assert summary.startswith(f"steps {WARMUP + 1}-{WARMUP + 2} recorded (2 of train.profile_steps 2)")
    assert "aten::mm" in summary


def test_a_single_process_writes_summary_and_trace(tmp_path):
    drive(StepProfiler(1, tmp_path), WARMUP + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.txt", "trace.json"]
