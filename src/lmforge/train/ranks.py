"""Which process this is when a launcher (torchrun, `accelerate launch`, `lmforge train --nproc`) starts several,
and the few collective steps a run needs between them.

lmforge never launches ranks itself: the launcher sets RANK / WORLD_SIZE / LOCAL_RANK, and `start` opens the
process group through accelerate (gloo on CPU, the accelerator's backend elsewhere), the same one the Trainer
then uses for DDP. One process (WORLD_SIZE unset or 1) needs none of it: every function here is then a no-op.

Who does what in a run of N ranks:
- rank 0 alone encodes the data into the cache; the others wait for the cache entry to appear (a file keyed by
  the data's content, not a collective that could time out during a long tokenisation), then read it;
- rank 0 alone prepares the output (including `--overwrite`'s move and delete) and writes every file of the run
  directory, with a barrier before (no rank still checking the output) and after (the start files exist);
- `lmforge.console.say` prints on rank 0 only; an error is printed by the rank it happened on, named by rank;
- trained tokens (and so trained tokens per second) are summed over the ranks.

Seeds: every rank seeds with train.seed, so the weights made at the start are the same everywhere (DDP also
broadcasts rank 0's); the sampler shuffles with the same seed on every rank and accelerate hands each rank its own
share of every global batch, so the ranks together see what one process with N times the batch sees. Dropout
draws the same numbers on every rank.
"""

from __future__ import annotations

import os

import torch

from lmforge.errors import LmforgeError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """Whether a launcher started this process (torchrun and accelerate launch set LOCAL_RANK, even for one)."""
    return "LOCAL_RANK" in os.environ


def is_main() -> bool:
    """Whether this process writes the run directory (rank 0, or the only process)."""
    return rank() == 0


def on_cpu() -> bool:
    """Whether the ranks run on the CPU (and so over gloo): no accelerator is visible."""
    return not torch.cuda.is_available()


def start() -> None:
    """Open the process group of a launched job (nothing for one process)."""
    if world_size() <= 1:
        return
    from accelerate import PartialState

    try:
        PartialState(cpu=on_cpu())
    except (RuntimeError, ValueError) as err:
        raise LmforgeError(
            f"rank {rank()} of {world_size()}: cannot join the process group ({err}); start lmforge train with "
            "torchrun, accelerate launch or --nproc, which set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE"
        ) from None


def finish() -> None:
    """Leave the process group once every rank is done: a rank that exits with it open (and DeepSpeed's CPU
    communication threads running) can abort as the interpreter ends, failing a job that finished."""
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait until every rank has come here (nothing for one process)."""
    if world_size() > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def sum_across(value: int) -> int:
    """The sum of `value` over all ranks; every rank must call it at the same point."""
    return _reduce(value, "SUM")


def any_across(flag: bool) -> bool:
    """Whether `flag` is true on any rank; every rank must call it at the same point."""
    return sum_across(int(flag)) > 0


def all_ok(ok: bool) -> bool:
    """Whether `ok` is true on every rank (a rank that failed to write tells the others instead of leaving them at
    a barrier); every rank must call it at the same point."""
    return sum_across(int(not ok)) == 0


def max_across(value: int) -> int:
    """The largest `value` over all ranks; every rank must call it at the same point (nothing for one process)."""
    return _reduce(value, "MAX")


def _reduce(value: int, op: str) -> int:
    """`value` all-reduced over the ranks with torch's ReduceOp `op`; `value` itself for one process."""
    if world_size() <= 1 or not torch.distributed.is_initialized():
        return value
    from accelerate import PartialState

    reduced = torch.tensor([value], dtype=torch.int64, device=PartialState().device)
    torch.distributed.all_reduce(reduced, op=getattr(torch.distributed.ReduceOp, op))
    return int(reduced.item())
