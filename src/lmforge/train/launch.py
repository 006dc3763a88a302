"""`lmforge train RECIPE --nproc N`: the same command run as N processes on this machine, launched by torchrun
(`torchrun --standalone --nproc_per_node N -m lmforge.cli train ...`). lmforge never launches ranks itself; on
many machines start torchrun (or accelerate launch) yourself, as the README's "Many GPUs" section shows."""

from __future__ import annotations

import subprocess
import sys

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.train import ranks


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
    return subprocess.run(command, check=False).returncode
