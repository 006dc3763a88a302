"""The output guard and the undoable start of a run, on folders alone (no training)."""

import json

import pytest

from lmforge.errors import LmforgeError
from lmforge.train import rundir

from run_dirs import saved


def a_run(folder):
    folder.mkdir(parents=True)
    (folder / rundir.RUN_INFO_FILE).write_text(json.dumps({"lmforge": "test"}))
    (folder / "model.safetensors").write_text("old weights")
    return folder


def test_a_new_or_empty_output_needs_no_flag(tmp_path):
    assert not rundir.check_output(tmp_path / "new", resume=False, overwrite=False).replace
    (tmp_path / "empty").mkdir()
    assert not rundir.check_output(tmp_path / "empty", resume=False, overwrite=False).replace


def test_an_output_with_files_needs_resume_or_overwrite(tmp_path):
    run = a_run(tmp_path / "run")
    with pytest.raises(LmforgeError, match="already holds files; add --resume"):
        rundir.check_output(run, resume=False, overwrite=False)
    assert rundir.check_output(run, resume=False, overwrite=True).replace


def test_overwrite_refuses_a_folder_lmforge_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LmforgeError, match="not an lmforge run directory"):
        rundir.check_output(tmp_path, resume=False, overwrite=True)


def test_resume_needs_a_checkpoint(tmp_path):
    run = a_run(tmp_path / "run")
    with pytest.raises(LmforgeError, match="no checkpoint in .* to resume from"):
        rundir.check_output(run, resume=True, overwrite=False)
    (run / "checkpoint-3").mkdir()  # an empty folder is no checkpoint: skipped, with why
    with pytest.raises(LmforgeError, match="checkpoint-3 skipped: no completion marker and trainer_state.json is"):
        rundir.check_output(run, resume=True, overwrite=False)
    saved(run, 2)
    assert rundir.check_output(run, resume=True, overwrite=False).checkpoint == str(run / "checkpoint-2")


def test_the_lock_file_is_not_a_file_of_the_run(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / rundir.LOCK_FILE).write_text("{}")
    assert not rundir.check_output(tmp_path / "out", resume=False, overwrite=False).replace


def test_a_failed_start_puts_the_old_run_back(tmp_path):
    run = a_run(tmp_path / "run")
    plan = rundir.check_output(run, resume=False, overwrite=True)
    with pytest.raises(RuntimeError), rundir.RunStart(plan):
        assert rundir.aside_path(run).is_dir() and not (run / "model.safetensors").exists()
        (run / "recipe.yaml").write_text("new")
        raise RuntimeError("the model did not load")
    assert (run / "model.safetensors").read_text() == "old weights" and not (run / "recipe.yaml").exists()
    assert not rundir.aside_path(run).exists()


def test_a_failed_first_start_leaves_nothing(tmp_path):
    plan = rundir.check_output(tmp_path / "new", resume=False, overwrite=False)
    with pytest.raises(KeyboardInterrupt), rundir.RunStart(plan):
        (tmp_path / "new" / "recipe.yaml").write_text("new")
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    plan = rundir.check_output(tmp_path / "empty", resume=False, overwrite=False)
    with pytest.raises(KeyboardInterrupt), rundir.RunStart(plan):
        (tmp_path / "empty" / "recipe.yaml").write_text("new")
        raise KeyboardInterrupt
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # as the user made it


def test_the_old_run_goes_once_the_new_one_has_started(tmp_path):
    run = a_run(tmp_path / "run")
    plan = rundir.check_output(run, resume=False, overwrite=True)
    with pytest.raises(RuntimeError), rundir.RunStart(plan) as start:
        start.started()
        assert not rundir.aside_path(run).exists()
        (run / "checkpoint-1").mkdir()
        raise RuntimeError("a crash after the first step")
    assert (run / "checkpoint-1").is_dir()  # the new run's work is kept for --resume


def test_a_leftover_aside_folder_is_reported(tmp_path):
    run = a_run(tmp_path / "run")
    rundir.aside_path(run).mkdir()
    with pytest.raises(LmforgeError, match="interrupted `--overwrite`"):
        rundir.check_output(run, resume=False, overwrite=True)
