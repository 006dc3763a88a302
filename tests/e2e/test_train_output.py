"""`lmforge train` and its output directory, as a user meets it: nothing lost, nothing claimed, no leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.errors import EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USER_ERROR

from cli_runs import LMFORGE, lmforge, recipe, write_chat, write_text


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its relative path, with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pt_run_once(tmp_path_factory, tiny_model_dir) -> Path:
    """A folder with a recipe, its data and its finished run (one optimizer step of pretraining), made once."""
    folder = tmp_path_factory.mktemp("pt_run")
    path = recipe(folder, tiny_model_dir, "pt", write_text(folder / "text.jsonl"), max_steps=1, save_every=1)
    out = lmforge("train", str(path), cwd=folder)
    assert out.returncode == 0, out.stderr
    return folder


@pytest.fixture
def finished_pt_run(tmp_path, pt_run_once) -> tuple[Path, Path]:
    """(the recipe, its finished run directory), a copy of `pt_run_once` in this test's folder."""
    shutil.copytree(pt_run_once, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "pt.yaml"
    path.write_text(path.read_text().replace(str(pt_run_once), str(tmp_path)))
    return path, tmp_path / "run-pt"


def test_overwrite_with_bad_new_data_keeps_the_old_run(tmp_path, finished_pt_run):
    path, run = finished_pt_run
    before = digest(run)
    out = lmforge("train", str(path), f"data.train.0.path={tmp_path / 'typo.jsonl'}", "--overwrite", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "typo.jsonl does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    assert digest(run) == before  # the old run, file for file
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left aside


def test_a_failed_start_restores_the_old_run_and_leaves_nothing_behind(tmp_path, finished_pt_run):
    path, run = finished_pt_run
    before = digest(run)
    # train.extra is checked when the trainer is made: after the new run has started in the output
    out = lmforge("train", str(path), "train.extra.not_an_option=1", "--overwrite", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "not_an_option" in out.stderr
    assert digest(run) == before
    fresh = lmforge("train", str(path), "train.extra.not_an_option=1", f"output={tmp_path / 'new'}", cwd=tmp_path)
    assert fresh.returncode == EXIT_USER_ERROR and not (tmp_path / "new").exists()
    again = lmforge("train", str(path), f"output={tmp_path / 'new'}", cwd=tmp_path)  # a plain rerun is not blocked
    assert again.returncode == 0, again.stderr


def test_overwrite_replaces_only_lmforge_run_folders(tmp_path, finished_pt_run):
    path, _ = finished_pt_run
    (tmp_path / "notes.txt").write_text("mine")
    out = lmforge("train", str(path), "output=.", "--overwrite", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "not an lmforge run directory" in out.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "text.jsonl").is_file()


def test_overwrite_replaces_the_old_run_once_the_new_one_trains(tmp_path, finished_pt_run):
    path, run = finished_pt_run
    (run / "old-marker.txt").write_text("from the old run")
    out = lmforge("train", str(path), "--overwrite", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (run / "old-marker.txt").exists() and (run / "model.safetensors").is_file()
    assert not (tmp_path / ".run-pt.lmforge-old").exists()


def test_an_unwritable_output_location_is_a_message(tmp_path, tiny_model_dir):
    if not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys, where nobody may create folders")
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    out = lmforge("train", str(path), "output=/sys/lmforge-test-run", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr
    assert "output /sys/lmforge-test-run: cannot" in out.stderr and "writable location" in out.stderr


@pytest.mark.parametrize(
    ("signum", "status"),
    [
        pytest.param(signal.SIGINT, EXIT_INTERRUPTED, id="SIGINT"),
        pytest.param(signal.SIGTERM, EXIT_STOPPED, id="SIGTERM", marks=pytest.mark.slow),  # the same path
    ],
)
def test_a_signal_saves_a_checkpoint_claims_nothing_and_says_how_to_resume(tmp_path, tiny_model_dir, signum, status):
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"), max_steps=400, save_every=1000)
    proc = subprocess.Popen(
        [*LMFORGE, "train", str(path)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    for line in proc.stderr:  # wait for a step to be done, then ask the run to stop as a scheduler would
        lines.append(line)
        if "step 2/400" in line:
            proc.send_signal(signum)
            break
    _, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode == status, err
    run = tmp_path / "run-sft"
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    assert len(checkpoints) == 1, err
    for final in ("adapter_model.safetensors", "README.md", "metrics.json", "loss.svg", "chat_template.jinja"):
        assert not (run / final).exists(), final
    assert "done; final model" not in err and "--resume" in err and checkpoints[0] in err
    assert f"stopped by {signal.Signals(signum).name} after step" in err


def test_a_registry_dataset_trains_and_is_named_in_the_model_card(tmp_path, tiny_model_dir):
    with write_chat(tmp_path / "chats.jsonl").open("a") as f:
        f.write("not json\n")  # skipped under on_error: skip, and listed in the run's rejects file
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "my_chats": {
                    "file_name": "chats.jsonl",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                        "system_tag": "system",
                    },
                }
            }
        )
    )
    path = recipe(tmp_path, tiny_model_dir, "sft", tmp_path / "unused.jsonl", max_steps=1)
    out = lmforge(
        "train",
        str(path),
        "data.train.0.path=null",
        "data.train.0.name=my_chats",
        f"data.registry={tmp_path}",
        "data.on_error=skip",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "run-sft" / "README.md").read_text()
    assert "- data: my_chats (max_length 64)" in card
    (reject,) = (tmp_path / "run-sft" / "rejects.jsonl").read_text().splitlines()
    assert json.loads(reject)["source"] == f"{tmp_path / 'chats.jsonl'}:25"


def test_a_hub_dataset_trains_and_is_named_in_the_model_card(tmp_path, tiny_model_dir):
    """`hub:` goes through datasets.load_dataset, which reads a local folder of data files without a network."""
    folder = tmp_path / "hub_copy"
    folder.mkdir()
    write_chat(folder / "train.jsonl")
    path = recipe(tmp_path, tiny_model_dir, "sft", tmp_path / "unused.jsonl", max_steps=1)
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    out = subprocess.run(
        [*LMFORGE, "train", str(path), "data.train.0.path=null", f"data.train.0.hub={folder}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "run-sft" / "README.md").read_text()
    assert f"- data: hub:{folder} (max_length 64)" in card


def test_resume_of_a_finished_run_without_checkpoints_is_a_message(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    out = lmforge("train", str(path), f"output={tmp_path / 'never'}", "--resume", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "no checkpoint" in out.stderr
    assert not (tmp_path / "never").exists()


def test_resume_of_a_finished_run_is_refused_and_changes_nothing(tmp_path, finished_pt_run):
    """Before, the Trainer trained a step past the end ("step 2/1") and replaced metrics.json with its figures."""
    path, run = finished_pt_run
    before = digest(run)
    again = lmforge("train", str(path), "--resume", cwd=tmp_path)
    assert again.returncode == EXIT_USER_ERROR and "already finished at step 1 of 1" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert digest(run) == before  # file for file


def test_a_run_stopped_at_its_end_gets_its_final_model_without_a_step_more(tmp_path, finished_pt_run):
    """The newest checkpoint is at the last step but the final model was not written (stopped while writing it),
    and run_info.json is gone too: the data is checked against the checkpoint's fingerprint, and the final model
    is the checkpoint's weights."""
    path, run = finished_pt_run
    for name in ("run_info.json", "metrics.json", "model.safetensors", "README.md"):
        (run / name).unlink()
    done = lmforge("train", str(path), "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "writing its final model, no step more" in done.stderr and "step 2/1" not in done.stderr
    final, saved = load_file(str(run / "model.safetensors")), load_file(str(run / "checkpoint-1" / "model.safetensors"))
    assert final.keys() == saved.keys() and all(torch.equal(final[k], saved[k]) for k in final)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumes"] == 1 and metrics["trained_tokens"] > 0 and metrics["train_loss"] > 0


def test_an_output_that_is_a_file_is_a_message(tmp_path, tiny_model_dir):
    (tmp_path / "taken").write_text("a file")
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    out = lmforge("train", str(path), f"output={tmp_path / 'taken'}", cwd=tmp_path)
    assert out.returncode == EXIT_USER_ERROR and "is a file, not a directory" in out.stderr
    assert (tmp_path / "taken").read_text() == "a file"
