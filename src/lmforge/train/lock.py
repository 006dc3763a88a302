"""The run lock: one lmforge run at a time in an output directory.

Rank 0 takes it before it looks at or writes anything in the output (so before `--overwrite` moves an old run
aside) and holds it until the run ends. It is `fcntl.flock` on `.lmforge.lock` in the output, which the kernel
frees when the process ends however it ends, so a lock file left by a killed run does not block; the file holds
the holder's pid, host and start time, for the message the next run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from lmforge.errors import LmforgeError

LOCK_FILE = ".lmforge.lock"  # in the output; rundir.py names it with the run's files (it is not one of them)


class RunLock:
    """A context manager holding the output's lock; `created_output` says whether taking it made the folder."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output / LOCK_FILE
        self.created_output = False
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        refuse_file_output(self.output)
        try:
            self.created_output = not self.output.exists()
            self.output.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    os.close(fd)
                    raise LmforgeError(
                        f"output {self.output} is in use by another lmforge run ({holder}); wait for it to end or "
                        "stop it, or set output to another directory"
                    ) from None
                if _same_file(fd, self.path):
                    self._fd = fd
                else:  # the holder removed the file as it ended and we locked the removed one: again
                    os.close(fd)
            _write_holder(self._fd)
        except OSError as err:
            self.release()
            raise LmforgeError(
                f"output {self.output}: cannot take the run lock {self.path} ({err.strerror}); set output to a "
                "writable location"
            ) from None

    def release(self) -> None:
        """Remove the lock file (still ours) and free the lock; an output made only for it goes too."""
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self.created_output and self.output.is_dir() and not any(self.output.iterdir()):
            self.output.rmdir()


def refuse_file_output(output: Path) -> None:
    """An output that exists must be a directory (checked by the lock and by rundir.check_output)."""
    if output.exists() and not output.is_dir():
        raise LmforgeError(f"output {output} is a file, not a directory; set output to a directory for the run")


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "it has not written its pid yet"


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    data = json.dumps(info).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
