"""The run lock between real processes: one run per output, freed however its holder ends."""

from __future__ import annotations

import json
import os
import signal

import pytest

from lmforge.errors import LmforgeError
from lmforge.train import rundir
from lmforge.train.lock import RunLock

from run_dirs import hold_lock


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_frees_the_lock(tmp_path):
    proc = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(LmforgeError, match=rf"in use by another lmforge run \(pid {proc.pid} on "):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "run" / rundir.LOCK_FILE).exists()  # left behind by the killed holder: stale, no block
    with RunLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / rundir.LOCK_FILE).exists()
    with RunLock(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()  # made only for the lock, and empty: gone with it


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path):
    (tmp_path / rundir.LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "x", "started": "then"}))
    with RunLock(tmp_path):
        pass
    assert tmp_path.is_dir() and not (tmp_path / rundir.LOCK_FILE).exists()


def test_overwrite_keeps_the_lock_held_in_the_output_and_its_undo_keeps_it_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.RUN_INFO_FILE).write_text("{}")
    with RunLock(run) as lock:
        plan = rundir.check_output(run, resume=False, overwrite=True)
        assert plan.replace
        with pytest.raises(RuntimeError), rundir.RunStart(plan):
            assert (run / rundir.LOCK_FILE).exists() and not (run / rundir.RUN_INFO_FILE).exists()
            with pytest.raises(LmforgeError, match="in use"):
                RunLock(run).acquire()  # the lock moved into the new output still holds
            raise RuntimeError("the new run fails before its first step")
        assert (run / rundir.RUN_INFO_FILE).exists() and lock.path.exists()  # the old run is back, still locked
        with pytest.raises(LmforgeError, match="in use"):
            RunLock(run).acquire()
    assert sorted(p.name for p in run.iterdir()) == [rundir.RUN_INFO_FILE]
