"""`lmforge plan RECIPE`: check what can be checked without training, then estimate memory and speed."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from lmforge.config.recipe import PreferenceSpec, Recipe
from lmforge.errors import LmforgeError
from lmforge.model.load import DTYPES, resolve_dtype
from lmforge.plan.counts import Counts, count_parameters
from lmforge.plan.memory import DEFAULT_OPTIMIZER, OPTIMIZER_STATE_BYTES, STRATEGIES, Setup, estimate, largest_batch
from lmforge.plan.report import Plan, size, table
from lmforge.plan.speed import DEFAULT_GPU, DEFAULT_MFU, gpu, speed
from lmforge.plan.validate import check_recipe
from lmforge.train.losses import auto_chunk_size

REFERENCE_STAGES = ("dpo", "kto")
METRICS_FILE, MEASURED_KEY = "metrics.json", "peak_gpu_memory_mib"  # written by train/run.py on CUDA
BATCH_LIMIT = 4096  # the largest batch the suggestion tries
HEADROOM = 0.10  # of each device's memory kept out of the suggestion: CUDA context, allocator fragmentation


def setup_of(
    recipe: Recipe, counts: Counts, *, gpus: int = 1, strategy: str = "ddp", batch: int | None = None
) -> Setup:
    """The training step a recipe runs on each of `gpus` devices."""
    train = recipe.train
    optimizer = str(train.extra.get("optim", DEFAULT_OPTIMIZER))
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise LmforgeError(
            f"train.extra.optim: {optimizer!r} is not one plan knows the state size of; it knows "
            f"{', '.join(OPTIMIZER_STATE_BYTES)}"
        )
    return Setup(
        batch=train.batch_size,
        seq=recipe.data.max_length,
        stage=recipe.stage,
        method=recipe.tuning.method,
        checkpointing=train.activation_checkpointing,
        loss_chunk=_loss_chunk(train.loss_chunk, counts.shape.vocab),
        reference=_reference(recipe),
        lora_dropout=recipe.tuning.lora.dropout > 0,
        grad_layers=_grad_layers(recipe),
        optimizer=optimizer,
        strategy=strategy,
        gpus=gpus,
    )


def _loss_chunk(setting: int | str, vocab: int) -> int | None:
    if setting == "off":
        return None
    return auto_chunk_size(vocab) if setting == "auto" else int(setting)


def _reference(recipe: Recipe) -> str | None:
    if recipe.stage not in REFERENCE_STAGES:
        return None
    spec = recipe.preference or PreferenceSpec()
    return "precomputed" if spec.precompute_reference else spec.reference_for(recipe.tuning.method)


def _grad_layers(recipe: Recipe) -> int | None:
    """Under method freeze with only later layers named, the backward pass stops at the lowest trained layer."""
    freeze = recipe.tuning.freeze
    if recipe.tuning.method != "freeze" or any("embed" in name for name in freeze.modules):
        return None
    return freeze.layers


def run_plan(
    recipe: Recipe,
    source: str,
    *,
    gpus: int = 1,
    strategy: str | None = None,
    gpu_name: str = DEFAULT_GPU,
    gpu_mem: str | None = None,
    mfu: float = DEFAULT_MFU,
    as_json: bool = False,
    measure: bool = False,
    stream: TextIO | None = None,
) -> Plan:
    """Check the recipe, estimate memory and speed per device, and print the plan. `strategy` None: the
    recipe's `distributed:` section's (its ZeRO stage for deepspeed). `measure`: also train the recipe's first
    steps in a scratch folder and print their measured peak beside the estimate (plan/measure.py)."""
    strategy = strategy or strategy_of(recipe)
    if gpus < 1:
        raise LmforgeError(f"--gpus {gpus}: the number of devices, at least 1")
    if measure and gpus > 1:
        raise LmforgeError(
            f"--measure with --gpus {gpus}: the measurement trains in this one process, so it can only be set "
            "beside a one-device estimate; leave out --gpus (or give --gpus 1)"
        )
    if strategy not in STRATEGIES:
        raise LmforgeError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)}")
    if measure:
        recipe = _pinned_dtype(recipe)
    accelerator = gpu(gpu_name)
    budget = int((parse_size(gpu_mem) if gpu_mem else accelerator.memory) * (1 - HEADROOM))
    checked = check_recipe(recipe)
    counts = count_parameters(recipe, checked.tokenizer)
    setup = setup_of(recipe, counts, gpus=gpus, strategy=strategy)
    memory = estimate(counts, setup)
    fits = largest_batch(counts, setup, budget, BATCH_LIMIT)
    plan = Plan(
        recipe=source,
        checked=checked,
        counts=counts,
        setup=setup,
        memory=memory,
        gpu_name=gpu_name,
        gpu=accelerator,
        budget=budget,
        speed=speed(counts, setup, accelerator, mfu, recipe.train.grad_accum),
        mfu=mfu,
        largest_batch=fits,
        suggestion=suggestion(setup, memory.peak, budget, fits),
    )
    if measure:
        from lmforge.plan.measure import measure_peak  # trains: loads torch's trainer only when asked

        taken = measure_peak(recipe)
        batch = taken.rows // 2 if setup.rows != setup.batch else taken.rows  # pair stages: chosen + rejected rows
        plan.measured = taken.peak
        plan.measured_estimate = estimate(counts, replace(setup, batch=batch, seq=taken.seq)).peak
        plan.measured_from = (
            f"measured now: optimizer step {taken.step} on {taken.device}, its batch {taken.rows} rows x "
            f"{taken.seq:,} tokens"
        )
    else:
        plan.measured = measured_peak(Path(recipe.output))
        plan.measured_from = "the finished run's metrics.json" if plan.measured else ""
    stream = stream or sys.stdout
    stream.write((json.dumps(plan.as_json()) if as_json else table(plan)) + "\n")
    return plan


def _pinned_dtype(recipe: Recipe) -> Recipe:
    """`model.dtype: auto` as this machine resolves it, so the estimate is for the dtype the measurement trains in
    (a plan otherwise takes auto as bf16, what it is on the GPUs plans are for)."""
    if recipe.model.dtype != "auto":
        return recipe
    local = {v: k for k, v in DTYPES.items()}[resolve_dtype("auto")]
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"dtype": local})})


def measured_peak(output: Path) -> int | None:
    """The peak a finished run of this recipe measured on its GPU (metrics.json), to print beside the estimate."""
    try:
        mib = json.loads((output / METRICS_FILE).read_text()).get(MEASURED_KEY)
    except (OSError, ValueError):
        return None
    return int(mib * 2**20) if isinstance(mib, int | float) else None


def suggestion(setup: Setup, peak: int, budget: int, fits: int) -> str:
    """What to do about the batch size, given the largest batch that fits."""
    room = f"{size(budget)} usable of each device ({HEADROOM:.0%} kept for the CUDA context and fragmentation)"
    if fits == 0:
        ideas = [
            i
            for i, off in (
                ("train.activation_checkpointing: true", setup.checkpointing),
                ("tuning.method: lora or qlora", setup.method in ("lora", "dora", "qlora")),
                ("--strategy zero3 or fsdp2 on more devices", setup.strategy in ("zero3", "fsdp2") and setup.gpus > 1),
            )
            if not off
        ]
        return f"even batch 1 does not fit in {room}; try {', or '.join(ideas) or 'a shorter data.max_length'}"
    verdict = "fits" if peak <= budget else "does NOT fit"
    most = f"{fits} or more" if fits == BATCH_LIMIT else str(fits)
    return (
        f"train.batch_size {setup.batch} {verdict} in {room}; the largest that fits is {most} "
        f"(keep batch_size x grad_accum x devices the same by changing train.grad_accum)"
    )


def parse_size(text: str) -> int:
    """`80GiB`, `80GB` (read as GiB, as GPU specifications mean), `40960MiB` or a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise LmforgeError(f"--gpu-mem {text!r}: expected a size such as 80GiB, 24GB or 40960MiB")
    value, unit = float(match.group(1)), match.group(2).upper()
    return int(value * 1024 ** "_KMGT".index(unit or "_"))


def strategy_of(recipe: Recipe) -> str:
    """The planner's name for the recipe's `distributed:` strategy: ddp, fsdp2, or zero1/2/3."""
    spec = recipe.distributed
    if spec.strategy != "deepspeed":
        return spec.strategy
    if spec.deepspeed.config is None:
        return f"zero{spec.deepspeed.stage}"
    try:
        stage = json.loads(Path(spec.deepspeed.config).read_text())["zero_optimization"]["stage"]
    except (OSError, ValueError, KeyError, TypeError):
        stage = spec.deepspeed.stage  # the training run names what is wrong with the file
    return f"zero{stage}" if stage in (1, 2, 3) else "ddp"
