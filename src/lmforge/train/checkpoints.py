"""Checkpoint folders: written whole or not at all, the one to resume from, and which ones are kept.

Every rank writes a checkpoint's files into `.checkpoint-N.partial` inside the output. When all ranks are done,
rank 0 writes `lmforge-complete.json` into it (each file and its size), flushes the files to disk and renames the
folder to `checkpoint-N`. So a `checkpoint-N` holding the marker is complete, and a kill, a full disk or a crash
during a save leaves only a `.partial` folder, which the next start removes and names.

`--resume` takes the newest checkpoint with a marker (checkpoint_files.verify then checks its files). A
`checkpoint-N` without a marker was written by an lmforge before markers (or by transformers itself): it is
used when every file a resume needs is there and reads (checkpoint_files.problems), and skipped with the reason
otherwise, since it may be a save that was cut short.

Retention (`train.keep`) counts complete checkpoints only and runs after a new one is complete, so the newest
complete checkpoint is never deleted, and a checkpoint without a marker is never deleted by lmforge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.train import checkpoint_files

MARKER = "lmforge-complete.json"
PREFIX = "checkpoint-"
PARTIAL = re.compile(r"^\.checkpoint-(\d+)\.partial$")
DELETING = ".deleting"  # a checkpoint retention is removing: renamed first, so a kill never leaves half of one
FINAL = re.compile(r"^checkpoint-(\d+)$")


def final_path(output: Path, step: int) -> Path:
    return output / f"{PREFIX}{step}"


def partial_path(output: Path, step: int) -> Path:
    """Where a checkpoint is written until it is complete."""
    return output / f".{PREFIX}{step}.partial"


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def checkpoint_dirs(output: Path) -> list[Path]:
    """Every `checkpoint-N` folder in the output, oldest (lowest N) first."""
    if not output.is_dir():
        return []
    found = [p for p in output.iterdir() if FINAL.match(p.name) and p.is_dir()]
    return sorted(found, key=step_of)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / MARKER).is_file()


def newest_complete(output: Path) -> Path | None:
    return next((p for p in reversed(checkpoint_dirs(output)) if is_complete(p)), None)


def partial_dirs(output: Path) -> list[Path]:
    """The folders saves left behind without finishing (killed, out of disk space, crashed)."""
    if not output.is_dir():
        return []
    return sorted(p for p in output.iterdir() if PARTIAL.match(p.name))


def remove_partials(output: Path) -> list[str]:
    """Remove what unfinished saves (and deletions) left behind; the saves' names, for the line that says so."""
    for path in output.glob(f".{PREFIX}*{DELETING}"):
        shutil.rmtree(path, ignore_errors=True)
    names = []
    for path in partial_dirs(output):
        shutil.rmtree(path, ignore_errors=True)
        names.append(path.name)
    return names


def complete(partial: Path, final: Path) -> None:
    """Mark a fully written checkpoint folder as complete and give it its final name.

    The files are flushed to disk before the marker names them, and the marker before the rename, so after a
    crash (even of the machine) a `checkpoint-N` with a marker holds what the marker lists.
    """
    files = {}
    for path in sorted(p for p in partial.rglob("*") if p.is_file()):
        _fsync(path)
        files[path.relative_to(partial).as_posix()] = path.stat().st_size
    marker = partial / MARKER
    with marker.open("w", encoding="utf-8") as f:
        json.dump({"step": step_of_partial(partial), "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(partial)
    if final.exists():  # the same step saved again (a resumed run that ends where it was stopped): the new one
        shutil.rmtree(final)  # is complete at this point, so the old one goes only now
    os.rename(partial, final)
    _fsync_dir(final.parent)


def step_of_partial(partial: Path) -> int:
    match = PARTIAL.match(partial.name)
    if match is None:
        raise ValueError(f"{partial} is not a partial checkpoint folder")
    return int(match.group(1))


def listed_files(checkpoint: Path) -> dict[str, int] | None:
    """The files and sizes the marker lists, or None when the marker is missing or does not parse."""
    try:
        return dict(json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def rotate(output: Path, keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep`; the newest complete one always stays."""
    complete_ones = [p for p in checkpoint_dirs(output) if is_complete(p)]
    if not keep or len(complete_ones) <= keep:
        return []
    doomed = complete_ones[: len(complete_ones) - max(keep, 1)]
    removed = []
    for path in doomed:
        going = path.with_name(f".{path.name}{DELETING}")
        try:
            os.rename(path, going)
        except OSError:  # kept this time; the next save tries again
            continue
        shutil.rmtree(going, ignore_errors=True)
        removed.append(path)
    return removed


@dataclass
class Choice:
    """The checkpoint `--resume` continues from, and the newer ones it passed over with why."""

    checkpoint: Path | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unmarked: bool = False  # written without a completion marker (an older lmforge); its files were checked

    def earlier(self, output: Path) -> Path | None:
        """The newest usable checkpoint before the chosen one, to name when the chosen one cannot be used."""
        if self.checkpoint is None:
            return None
        older = [p for p in checkpoint_dirs(output) if step_of(p) < step_of(self.checkpoint)]
        for path in reversed(older):
            if is_complete(path) or not checkpoint_files.problems(path):
                return path
        return None


def choose(output: Path) -> Choice:
    """The newest complete checkpoint in `output` (module docstring), with the newer ones skipped and why."""
    choice = Choice(checkpoint=None)
    for path in partial_dirs(output):
        choice.skipped.append((path.name, "a save that did not finish (no completion marker)"))
    for path in reversed(checkpoint_dirs(output)):
        if is_complete(path):
            choice.checkpoint = path
            break
        found = checkpoint_files.problems(path)
        if not found:
            choice.checkpoint, choice.unmarked = path, True
            break
        choice.skipped.append((path.name, f"no completion marker and {found[0]}"))
    choice.skipped.sort(key=lambda item: -_step_in(item[0]))
    if choice.checkpoint is not None:
        newer = step_of(choice.checkpoint)
        choice.skipped = [s for s in choice.skipped if _step_in(s[0]) > newer]
    return choice


def _step_in(name: str) -> int:
    """The step of a `checkpoint-N` or `.checkpoint-N.partial` folder name."""
    match = FINAL.match(name) or PARTIAL.match(name)
    return int(match.group(1))


def verify(choice: Choice, output: Path, *, weights_only: bool) -> None:
    """Check every file the resume reads before anything is loaded: a missing file is an error naming it (unless
    only the weights are read), a damaged one an error naming it and the earlier checkpoint to use instead."""
    checkpoint = choice.checkpoint
    listed = listed_files(checkpoint) or {}
    absent = [name for name in listed if not (checkpoint / name).is_file()]
    absent += [name for name in checkpoint_files.missing(checkpoint) if name not in absent]
    if weights_only:
        if not any(checkpoint_files.is_weights(p.name) for p in checkpoint.iterdir()):
            raise LmforgeError(
                f"--resume-weights-only: {checkpoint} holds no model or adapter weights; {_earlier(choice, output)}"
            )
        absent = [name for name in absent if checkpoint_files.is_weights(name)]
    if absent:
        more = f" (and {len(absent) - 1} more: {', '.join(absent[1:4])})" if len(absent) > 1 else ""
        raise LmforgeError(
            f"--resume: {checkpoint / absent[0]} is missing{more}, and resuming needs it. Add --resume-weights-only "
            f"to load only the weights and restart the optimizer, learning-rate schedule and data order, or "
            f"{_earlier(choice, output)}"
        )
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MARKER):
        name = path.relative_to(checkpoint).as_posix()
        if weights_only and not checkpoint_files.is_weights(path.name):
            continue
        size = path.stat().st_size
        why = f"is {size} bytes but was written with {listed[name]}" if listed.get(name, size) != size else None
        why = why or checkpoint_files.unreadable(path)
        if why:
            raise LmforgeError(f"--resume: {path} {why}, so {checkpoint.name} is damaged; {_earlier(choice, output)}")


def _earlier(choice: Choice, output: Path) -> str:
    earlier = choice.earlier(output)
    if earlier is None:
        return f"no earlier checkpoint in {output} is usable: start the run again with --overwrite"
    return (
        f"resume from the earlier {earlier.name} by moving {choice.checkpoint.name} out of {output} and running "
        "with --resume again"
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems cannot sync a directory; the rename is then as durable as they make it
        pass
