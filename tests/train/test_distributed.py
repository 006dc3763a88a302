"""Two processes on the CPU (torchrun over gloo, launched by `lmforge train --nproc 2`) against one: DDP with
per-device batch b trains what one process with batch 2b trains (losses per step, final weights, trained tokens),
only rank 0 writes the run directory and prints, and a rank that fails ends the job, named by its rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.quickstart.assets import build_base_model
from lmforge.train.launch import launch, torchrun_command

from cli_runs import lmforge, write_chat
from distributed_runs import SHAPE, final_weights, step_losses, write_recipe


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_base_model(tmp_path_factory.mktemp("dist_model"), tiny_tokenizer_dir, seed=0, shape=SHAPE)


def train_both(tmp_path: Path, model: Path, *, method: str, packing: bool) -> tuple[Path, Path, str]:
    """The same training as one process with batch 4 and as two with batch 2; the two-process run's stderr."""
    data = write_chat(tmp_path / "chat.jsonl", 48)
    one = write_recipe(tmp_path, "one", model, data, batch=4, method=method, packing=packing)
    two = write_recipe(tmp_path, "two", model, data, batch=2, method=method, packing=packing)
    single = lmforge("train", str(one), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    double = lmforge("train", str(two), "--nproc", "2", cwd=tmp_path)
    assert double.returncode == 0, double.stderr
    return tmp_path / "one", tmp_path / "two", double.stderr


def assert_same_training(one: Path, two: Path) -> None:
    assert step_losses(two) == pytest.approx(step_losses(one), abs=1e-5)
    a, b = final_weights(one), final_weights(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0)
    trained = [json.loads((run / "metrics.json").read_text())["trained_tokens"] for run in (one, two)]
    assert trained[1] == trained[0] > 0


def test_two_processes_train_what_one_does_and_rank_0_alone_writes(tmp_path, small_model):
    one, two, stderr = train_both(tmp_path, small_model, method="full", packing=False)
    assert_same_training(one, two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    for name in ("chat_template.jinja", "config.json", "tokenizer.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
    info = json.loads((two / "run_info.json").read_text())
    assert info["output"] == str(two.resolve()) and info["data"]["cache"] == "miss"  # rank 0 encoded the data
    assert stderr.count("lmforge: done; final model in") == 1  # printed by rank 0 only
    assert stderr.count("step 3/3") == 1


@pytest.mark.slow
def test_two_processes_train_what_one_does_packed_lora(tmp_path, small_model):
    one, two, _ = train_both(tmp_path, small_model, method="lora", packing=True)
    assert_same_training(one, two)


def test_a_failing_rank_ends_the_job_named_by_its_rank(tmp_path, small_model):
    """Rank 0 reads the records and meets a broken one; rank 1 only waits for the cache rank 0 never writes. The
    job must still end (torchrun stops the waiting rank), with a failing status and the rank in the message."""
    data = write_chat(tmp_path / "chat.jsonl", 8)
    with data.open("a") as f:
        f.write('{"messages": [{"role": "asistant", "content": "hi"}]}\n')
    recipe = write_recipe(tmp_path, "broken", small_model, data, batch=2, method="full", packing=False)
    done = lmforge("train", str(recipe), "--nproc", "2", cwd=tmp_path)
    assert done.returncode != 0
    assert "lmforge [rank 0]: " in done.stderr and "asistant" in done.stderr
    assert not (tmp_path / "broken").exists()


def test_nproc_runs_lmforge_train_under_torchrun():
    command = torchrun_command(2, ["r.yaml", "train.lr=1e-4", "--overwrite"])
    assert command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert command[7:] == ["lmforge.cli", "train", "r.yaml", "train.lr=1e-4", "--overwrite"]


def test_nproc_below_one_is_refused():
    with pytest.raises(LmforgeError, match="--nproc 0"):
        launch(0, ["r.yaml"])
