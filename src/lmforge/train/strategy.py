"""`distributed:` in the recipe turned into TrainingArguments options: how several processes share the work.

- ddp: nothing to add; the Trainer wraps the model in DistributedDataParallel when launched with several ranks.
- fsdp2: transformers/accelerate's FSDP2 (`fsdp_config` version 2): full shard, wrapped by decoder layer (the
  model's `_no_split_modules`), mixed precision from model.dtype, optional CPU offload, sharded checkpoints.
  accelerate applies it to launched processes on accelerators only (not over gloo on the CPU), so anything
  else is refused rather than silently trained unsharded.
- deepspeed: a ZeRO preset shipped beside this module (deepspeed/zero{1,2,3}.json) or the user's JSON, with the
  offload options applied and the `auto` values the recipe decides filled in (batch sizes, accumulation,
  clipping, precision); the ones that depend on the model (bucket sizes) are left to transformers, which fills
  them from the model's hidden size.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from lmforge.config.recipe import DeepSpeedSpec, Recipe
from lmforge.errors import LmforgeError
from lmforge.train import ranks

PRESETS = Path(__file__).parent / "deepspeed"
AUTO = "auto"


def strategy_arguments(recipe: Recipe, precision: str, world_size: int) -> dict[str, Any]:
    """The TrainingArguments options of the recipe's `distributed.strategy` (precision: bf16, fp16 or fp32)."""
    spec = recipe.distributed
    if spec.strategy == "fsdp2":
        require_fsdp2_devices()
        return fsdp2_arguments(recipe)
    if spec.strategy == "deepspeed":
        require_deepspeed()
        return {"deepspeed": deepspeed_config(recipe, precision, world_size)}
    return {}


def fsdp2_arguments(recipe: Recipe) -> dict[str, Any]:
    fsdp = recipe.distributed.fsdp
    config = {
        "version": 2,
        "reshard_after_forward": fsdp.reshard_after_forward,
        "cpu_offload": fsdp.offload,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # by decoder layer: the model's _no_split_modules
        "state_dict_type": "SHARDED_STATE_DICT" if fsdp.checkpoint == "sharded" else "FULL_STATE_DICT",
        # FSDP checkpoints each wrapped layer itself; the Trainer's own checkpointing would gather twice
        "activation_checkpointing": recipe.train.activation_checkpointing,
    }
    return {"fsdp": True, "fsdp_config": config, "activation_checkpointing": False}


def deepspeed_config(recipe: Recipe, precision: str, world_size: int) -> dict[str, Any]:
    """The preset or the user's JSON, offload applied, the recipe's `auto` values filled; a value the user set
    that contradicts the recipe is an error naming both."""
    spec = recipe.distributed.deepspeed
    config = _read_config(spec)
    zero = config.setdefault("zero_optimization", {})
    if spec.config is None:
        if spec.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if spec.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    train = recipe.train
    where = spec.config or f"the ZeRO-{spec.stage} preset"
    _fill(config, "train_micro_batch_size_per_gpu", train.batch_size, "train.batch_size", where)
    _fill(config, "gradient_accumulation_steps", train.grad_accum, "train.grad_accum", where)
    global_batch = train.batch_size * train.grad_accum * world_size
    _fill(config, "train_batch_size", global_batch, "train.batch_size x train.grad_accum x processes", where)
    _fill(config, "gradient_clipping", train.max_grad_norm, "train.max_grad_norm", where)
    for name in ("bf16", "fp16"):
        section = config.setdefault(name, {})
        _fill(section, "enabled", precision == name, f"model.dtype ({precision})", where, key=f"{name}.enabled")
    return config


def start_deepspeed(recipe: Recipe) -> None:
    """DeepSpeed's communication on the process group torch already runs, before the model is built. ZeRO-3
    builds the model partitioned (deepspeed.zero.Init inside from_pretrained), which counts the processes through
    DeepSpeed's own communication; accelerate starts that for processes on accelerators only, so on the CPU
    ZeRO-3 would count one process and refuse the batch sizes. Harmless where it is already started."""
    if recipe.distributed.strategy != "deepspeed" or ranks.world_size() < 2:
        return
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend=dist.get_backend() if dist.is_initialized() else None)


def require_fsdp2_devices() -> None:
    """accelerate applies FSDP only to processes launched on accelerators; anywhere else the Trainer would train
    with DDP or one unsharded copy without a word, so say it and stop."""
    if ranks.on_cpu():
        raise LmforgeError(
            "distributed.strategy: fsdp2 needs GPUs (or another accelerator): accelerate shards with FSDP only "
            "there, and on the CPU it would run plain DDP instead; use strategy ddp on this machine"
        )
    if not ranks.launched():
        raise LmforgeError(
            "distributed.strategy: fsdp2 needs a launcher: run lmforge train --nproc N (N = 1 for one GPU), "
            "torchrun or accelerate launch, else the model is not sharded"
        )


def require_deepspeed() -> None:
    if importlib.util.find_spec("deepspeed") is None:
        raise LmforgeError(
            "distributed.strategy: deepspeed needs the deepspeed package, which is not installed here; install it "
            "(pip install deepspeed, on a machine with the CUDA toolkit) or use strategy ddp or fsdp2"
        )


def _read_config(spec: DeepSpeedSpec) -> dict[str, Any]:
    path = Path(spec.config).expanduser() if spec.config else PRESETS / f"zero{spec.stage}.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LmforgeError(f"distributed.deepspeed.config: cannot read {path} ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise LmforgeError(
            f"distributed.deepspeed.config: {path}:{err.lineno}: not valid JSON ({err.msg}); fix the file"
        ) from None
    if not isinstance(config, dict):
        raise LmforgeError(f"distributed.deepspeed.config: {path} holds a {type(config).__name__}, not a JSON object")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise LmforgeError(f"distributed.deepspeed.config: {path}: zero_optimization.stage is {stage!r}; use 0-3")
    return config


def _fill(config: dict, name: str, value: Any, source: str, where: str, key: str | None = None) -> None:
    """Set `name` to the recipe's value when absent or `auto`; refuse a different value the user wrote."""
    given = config.get(name, AUTO)
    if given == AUTO:
        config[name] = value
    elif given != value:
        raise LmforgeError(
            f"distributed.deepspeed.config: {where} sets {key or name} to {given!r}, but the recipe's {source} "
            f'gives {value!r}; set it to "auto" (filled from the recipe) or change the recipe to match'
        )
