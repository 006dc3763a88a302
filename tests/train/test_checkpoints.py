"""Checkpoint folders on disk: completion, the choice `--resume` makes, the checks before it, retention."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.train import checkpoints

from run_dirs import saved, write_files


def test_a_completed_checkpoint_lists_its_files_and_leaves_no_partial(tmp_path):
    path = saved(tmp_path, 2)
    listed = checkpoints.listed_files(path)
    assert listed["optimizer.pt"] == (path / "optimizer.pt").stat().st_size and len(listed) == 5
    assert checkpoints.partial_dirs(tmp_path) == [] and checkpoints.is_complete(path)


def test_resume_skips_a_newer_partial_and_a_newer_unmarked_half_checkpoint(tmp_path):
    saved(tmp_path, 2)
    write_files(checkpoints.partial_path(tmp_path, 6), 6)  # killed while saving
    half = write_files(tmp_path / "checkpoint-4", 4)  # an older lmforge's save cut short
    (half / "optimizer.pt").unlink()
    choice = checkpoints.choose(tmp_path)
    assert choice.checkpoint == tmp_path / "checkpoint-2" and not choice.unmarked
    assert [name for name, _ in choice.skipped] == [".checkpoint-6.partial", "checkpoint-4"]
    assert "optimizer.pt is missing" in choice.skipped[1][1]
    assert checkpoints.remove_partials(tmp_path) == [".checkpoint-6.partial"]
    assert not checkpoints.partial_path(tmp_path, 6).exists()


def test_an_unmarked_checkpoint_whose_files_all_read_is_used(tmp_path):
    saved(tmp_path, 2)
    write_files(tmp_path / "checkpoint-4", 4)
    choice = checkpoints.choose(tmp_path)
    assert choice.checkpoint == tmp_path / "checkpoint-4" and choice.unmarked
    checkpoints.verify(choice, tmp_path, weights_only=False)


def test_a_missing_optimizer_is_an_error_naming_it_unless_only_weights_are_read(tmp_path):
    saved(tmp_path, 2)
    newest = saved(tmp_path, 4)
    (newest / "optimizer.pt").unlink()
    choice = checkpoints.choose(tmp_path)
    assert choice.checkpoint == newest
    with pytest.raises(LmforgeError, match=r"4/optimizer.pt is missing.*--resume-weights-only.*checkpoint-2"):
        checkpoints.verify(choice, tmp_path, weights_only=False)
    checkpoints.verify(choice, tmp_path, weights_only=True)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_a_truncated_file_is_a_message_naming_it_and_the_earlier_checkpoint(tmp_path, name):
    saved(tmp_path, 2)
    newest = saved(tmp_path, 4)
    data = (newest / name).read_bytes()
    (newest / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(LmforgeError, match=rf"checkpoint-4/{name} is \d+ bytes but was written with .*checkpoint-2"):
        checkpoints.verify(checkpoints.choose(tmp_path), tmp_path, weights_only=False)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_a_damaged_file_of_an_unmarked_checkpoint_is_found_by_its_format(tmp_path, name):
    folder = write_files(tmp_path / "checkpoint-4", 4)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    choice = checkpoints.choose(tmp_path)
    assert choice.checkpoint is None and name in choice.skipped[0][1]


def test_retention_keeps_the_newest_complete_ones_and_never_an_unmarked_one(tmp_path):
    legacy = write_files(tmp_path / "checkpoint-1", 1)
    for step in (2, 4, 6, 8):
        saved(tmp_path, step)
    write_files(checkpoints.partial_path(tmp_path, 10), 10)
    removed = checkpoints.rotate(tmp_path, keep=2)
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-4"]
    assert [p.name for p in checkpoints.checkpoint_dirs(tmp_path)] == ["checkpoint-1", "checkpoint-6", "checkpoint-8"]
    assert not list(tmp_path.glob(".checkpoint-*.deleting"))
    assert legacy.exists() and checkpoints.rotate(tmp_path, keep=1) == [tmp_path / "checkpoint-6"]
    assert checkpoints.newest_complete(tmp_path) == tmp_path / "checkpoint-8"
