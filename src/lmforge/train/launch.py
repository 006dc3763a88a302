"""`lmforge train RECIPE --nproc N`: the same command run as N processes on this machine, launched by torchrun
(`torchrun --standalone --nproc_per_node N -m lmforge.cli train ...`). lmforge never launches ranks itself; on
many machines start torchrun (or accelerate launch) yourself, as the README's "Many GPUs" section shows.

SIGTERM and SIGINT sent to `lmforge train --nproc` reach every rank (see preempt.py for what they do there), and
the job then exits with the status of a stopped run (143, 130) rather than torchrun's."""

from __future__ import annotations

import signal
import subprocess
import sys

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.train import ranks
from lmforge.train.preempt import SIGNALS, exit_status


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, the same program) running `lmforge train` N times."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "lmforge.cli",
        "train",
        *train_args,
    ]


def launch(nproc: int, train_args: list[str]) -> int:
    """Run `lmforge train train_args` as `nproc` processes and return the job's exit status (torchrun's)."""
    if nproc < 1:
        raise LmforgeError(f"--nproc {nproc}: the number of processes must be 1 or more")
    if ranks.world_size() > 1:
        raise LmforgeError(
            f"--nproc {nproc}: this lmforge train already runs as rank {ranks.rank()} of {ranks.world_size()} "
            "under a launcher; drop --nproc (the launcher decides the processes)"
        )
    command = torchrun_command(nproc, train_args)
    say(f"lmforge: launching {nproc} processes: torchrun --standalone --nproc_per_node {nproc} -m lmforge.cli train")
    job = subprocess.Popen(command, start_new_session=True)  # a terminal's Ctrl-C reaches it through us only
    forwarded: list[int] = []

    def forward(signum: int, frame) -> None:
        forwarded.append(signum)
        _signal_job(job.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in SIGNALS}
    try:
        status = job.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exit_status(forwarded[0]) if forwarded and status != 0 else status


def _signal_job(pid: int, signum: int) -> None:
    """Send `signum` to torchrun and to its ranks (torchrun starts each in a session of its own). torchrun
    forwards the first one too, which the ranks take as the same request (preempt.REPEAT_AFTER_S); a second
    one reaches them straight, while torchrun may already be stopping."""
    import psutil

    try:
        job = psutil.Process(pid)
        processes = [job, *job.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
