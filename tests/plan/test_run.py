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


def test_the_strategy_defaults_to_the_recipes_distributed_section(tmp_path):
    from lmforge.config.recipe import Recipe
    from lmforge.plan.run import strategy_of

    base = {"stage": "sft", "model": {"path": "m"}, "data": {"train": [{"path": "d.jsonl"}]}, "output": "o"}
    assert strategy_of(Recipe.model_validate(base)) == "ddp"
    assert strategy_of(Recipe.model_validate({**base, "distributed": {"strategy": "fsdp2"}})) == "fsdp2"
    zero = {"strategy": "deepspeed", "deepspeed": {"stage": 3}}
    assert strategy_of(Recipe.model_validate({**base, "distributed": zero})) == "zero3"
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    custom = {"strategy": "deepspeed", "deepspeed": {"config": str(own)}}
    assert strategy_of(Recipe.model_validate({**base, "distributed": custom})) == "zero1"
