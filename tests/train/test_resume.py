"""The rules of `--resume` (resume.py) on a run folder as a run leaves it: its recipe.yaml, run_info.json and a
checkpoint's trainer_state.json with the ledger (ledger.py). The CLI runs are in tests/e2e (test_cli.py,
test_train_output.py, test_exact_resume.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from lmforge.config.load import dump_recipe, load_recipe
from lmforge.errors import LmforgeError
from lmforge.train.ledger import RunLedger
from lmforge.train.resume import check_resume, check_same_data

from cli_runs import recipe, write_text


def make_run(tmp_path: Path, step: int = 2, total: int = 4, ledger: bool = True) -> tuple[Path, Path, str]:
    """(the recipe file, the run folder, its checkpoint) of a run stopped after `step` of `total` steps."""
    data = write_text(tmp_path / "text.jsonl", 4)
    path = recipe(tmp_path, tmp_path / "model", "pt", data, max_steps=total, save_every=2)
    run = tmp_path / "run-pt"
    checkpoint = run / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    started = load_recipe(path)
    (run / "recipe.yaml").write_text(dump_recipe(started))
    (run / "run_info.json").write_text(json.dumps({"data": {"fingerprint": "f" * 64}}))
    state = {
        "global_step": step,
        "max_steps": total,
        "log_history": [{"loss": 2.0, "step": 1, "trained_tokens": 10}, {"loss": 1.0, "step": 2, "trained_tokens": 25}],
        "stateful_callbacks": {},
    }
    if ledger:
        book = RunLedger(recipe=started.model_dump(mode="json"), fingerprint="f" * 64, world_size=1)
        for logs in state["log_history"]:
            book.add_log(logs, logs["step"])
        state["stateful_callbacks"]["RunLedger"] = book.state()
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    return path, run, str(checkpoint)


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("train.lr=0.01", "optimizer and scheduler states"),
        ("train.max_steps=8", "schedule was made for the run's length"),
        ("train.scheduler=linear", "scheduler state"),
        ("train.warmup=2", "scheduler state"),
        ("train.batch_size=2", "continues the same training"),
        ("tuning.method=lora", "continues the same training"),
    ],
)
def test_an_override_that_changes_the_training_is_refused_by_name(tmp_path, override, why):
    path, run, checkpoint = make_run(tmp_path)
    key = override.split("=")[0]
    with pytest.raises(LmforgeError, match=rf"--resume: {key} is .* in the run's recipe.yaml") as err:
        check_resume(load_recipe(path, [override]), run, checkpoint)
    assert why in str(err.value) and "drop the override" in str(err.value)


def test_harmless_overrides_are_applied_and_data_keys_are_left_to_the_fingerprint(tmp_path):
    path, run, checkpoint = make_run(tmp_path)
    moved = tmp_path / "moved.jsonl"
    overrides = ["train.save_every=1", "train.log_every=5", "train.keep=1", f"data.train.0.path={moved}"]
    point = check_resume(load_recipe(path, overrides), run, checkpoint)
    assert point.applied["train.save_every"] == [2, 1] and point.applied["train.keep"] == [3, 1]
    assert point.applied["train.log_every"] == [1, 5] and point.applied["data.train.0.path"][1] == str(moved)
    assert point.step == 2 and not point.at_end and point.ledger.resumes == 1
    assert check_resume(load_recipe(path, ["train.epochs=9"]), run, checkpoint).applied  # max_steps decides


def test_a_finished_run_is_refused_and_one_stopped_before_its_final_model_is_finished(tmp_path):
    path, run, checkpoint = make_run(tmp_path, step=4, total=4)
    assert check_resume(load_recipe(path), run, checkpoint).at_end  # no metrics.json: the final model is left
    (run / "metrics.json").write_text("{}")
    with pytest.raises(LmforgeError, match="already finished at step 4 of 4"):
        check_resume(load_recipe(path), run, checkpoint)


def test_without_recipe_yaml_the_checkpoint_has_the_start(tmp_path):
    path, run, checkpoint = make_run(tmp_path)
    (run / "recipe.yaml").unlink()
    with pytest.raises(LmforgeError, match="train.lr is 0.001"):
        check_resume(load_recipe(path, ["train.lr=0.01"]), run, checkpoint)


def test_without_run_info_the_data_fingerprint_comes_from_the_checkpoint(tmp_path):
    path, run, checkpoint = make_run(tmp_path)
    (run / "run_info.json").unlink()
    point = check_resume(load_recipe(path), run, checkpoint)
    check_same_data(point, "f" * 64)
    with pytest.raises(LmforgeError, match="the data, template, tokenizer or data settings changed"):
        check_same_data(point, "0" * 64)


def test_a_run_that_records_no_fingerprint_is_not_resumed(tmp_path):
    path, run, checkpoint = make_run(tmp_path, ledger=False)  # a checkpoint from before the ledger
    (run / "run_info.json").unlink()
    point = check_resume(load_recipe(path), run, checkpoint)
    with pytest.raises(LmforgeError, match="cannot tell whether the data changed"):
        check_same_data(point, "f" * 64)
    assert point.ledger.trained_tokens == 25 and point.ledger.loss_sum == 3.0  # its sums, from the logs


def test_another_number_of_processes_is_refused(tmp_path, monkeypatch):
    path, run, checkpoint = make_run(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LmforgeError, match="trained by 1 process.* --nproc 1"):
        check_resume(load_recipe(path), run, checkpoint)


def test_the_ledger_logs_at_every_save_and_sums_the_whole_run():
    ledger, control = RunLedger(), TrainerControl()
    control.should_save = True
    ledger.on_step_end(SimpleNamespace(), SimpleNamespace(global_step=3), control)
    assert control.should_log  # the checkpoint's sums end at its step
    ledger.add_log({"loss": 2.0, "trained_tokens": 40}, 2)
    ledger.add_log({"eval_loss": 9.0}, 3)  # not a training log
    ledger.add_log({"loss": 1.0, "trained_tokens": 70}, 3)
    ledger.runtime, ledger.resumes = 10.0, 1
    metrics = ledger.whole_run({"train_runtime": 5.0, "train_steps_per_second": 0.2, "total_flos": 1}, 3, 2)
    assert metrics["train_loss"] == 5.0 / 3 and metrics["train_runtime"] == 15.0 and metrics["resumes"] == 1
    assert metrics["train_steps_per_second"] == 0.2 and "total_flos" not in metrics  # 3 steps in 15 s
