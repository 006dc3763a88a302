"""The plan's helpers that read the outside world (lmforge/plan/run.py)."""

from __future__ import annotations

import json

from lmforge.plan.run import measured_peak


def test_measured_peak_comes_from_a_finished_runs_metrics(tmp_path):
    assert measured_peak(tmp_path) is None  # no run yet
    (tmp_path / "metrics.json").write_text(json.dumps({"train_loss": 1.0}))
    assert measured_peak(tmp_path) is None  # a CPU run records no GPU peak
    (tmp_path / "metrics.json").write_text(json.dumps({"peak_gpu_memory_mib": 1536}))
    assert measured_peak(tmp_path) == 1536 * 2**20
