"""Decide which weights train: full, freeze (the last N decoder layers + named modules), LoRA, DoRA, QLoRA.

Names in the recipe (`freeze.modules`, `lora.target`, `lora.modules_to_save`) match a module by its full
dotted name or by its last parts: `norm` is `model.norm`, `q_proj` is every `...self_attn.q_proj`.
A name that matches nothing is an error that lists names the model has.

Tied embeddings (lm_head sharing its weight with embed_tokens, as in many small models): there is one
tensor, so `freeze.modules: [lm_head]` (or `[embed_tokens]`) trains both, and LoRA's `modules_to_save`
keeps the pair tied (peft's `ensure_weight_tying`).

A model with a new head (a reward model's one-output `score` layer) passes `head=` and peft's task type
(`task_type=SEQ_CLS`): the head trains whole under every method (it joins `freeze.modules`; under LoRA it
is left out of the targets and saved whole through `modules_to_save`).
"""

from __future__ import annotations

import difflib
import logging
import math

import torch
from torch import nn

from lmforge.config.recipe import FreezeSpec, LoraSpec, TuningSpec
from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

ALL_LINEAR = "all-linear"
CAUSAL_LM, SEQ_CLS = "CAUSAL_LM", "SEQ_CLS"  # peft task types: a generating model, a classification head
LAYER_LIST_NAMES = ("layers", "h", "blocks", "layer")


def apply_tuning(model, tuning: TuningSpec, *, task_type: str = CAUSAL_LM, head: str | None = None):
    """Mark what trains as the tuning method says; LoRA-type methods return the peft-wrapped model.

    `task_type` is peft's (CAUSAL_LM, or SEQ_CLS for a classification head); `head` names a new module that
    trains whole under every method.
    """
    if _is_peft(model):
        raise LmforgeError("apply_tuning: the model already carries a peft adapter; load a plain base model")
    method = tuning.method
    if method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if method == "freeze":
        freeze = tuning.freeze
        if head is not None and head not in freeze.modules:
            freeze = freeze.model_copy(update={"modules": [*freeze.modules, head]})
        apply_freeze(model, freeze)
        return model
    if method == "qlora" and not getattr(model, "is_loaded_in_4bit", False):
        raise LmforgeError(
            "tuning.method: qlora needs the base model loaded in 4 bit; load it with "
            "lmforge.model.load.load_model(spec, tuning) using the same tuning section"
        )
    return apply_lora(model, tuning.lora, dora=method == "dora", task_type=task_type, head=head)


def apply_freeze(model: nn.Module, spec: FreezeSpec) -> None:
    """Train only the last `spec.layers` decoder layers and the modules named in `spec.modules`."""
    layers = decoder_layers(model)
    if spec.layers > len(layers):
        raise LmforgeError(
            f"tuning.freeze.layers: {spec.layers}, but the model has {len(layers)} decoder layers; "
            f"use at most {len(layers)} (or method full)"
        )
    for param in model.parameters():
        param.requires_grad_(False)
    chosen: list[nn.Module] = list(layers[len(layers) - spec.layers :])
    for name in spec.modules:
        chosen.extend(find_modules(model, name, "tuning.freeze.modules"))
    for module in chosen:
        for param in module.parameters():
            param.requires_grad_(True)
    if parameter_counts(model)[0] == 0:
        raise LmforgeError(
            "tuning.freeze: nothing would train (layers: 0 and no modules); set freeze.layers >= 1 "
            "or name modules such as lm_head"
        )
    if _embeddings_tied(model) and any(_is_embedding_pair_member(model, m) for m in chosen):
        logger.warning("lm_head and embed_tokens share one weight (tied embeddings): both train together")


def apply_lora(
    model: nn.Module, spec: LoraSpec, *, dora: bool = False, task_type: str = CAUSAL_LM, head: str | None = None
):
    """Wrap `model` with a LoRA (or DoRA) adapter; only the adapter, `modules_to_save` and `head` train.

    `head` (a new layer such as a reward model's `score`) is never a LoRA target and is saved whole.
    """
    from peft import LoraConfig, get_peft_model

    targets = _lora_targets(spec.target)
    saved = list(spec.modules_to_save)
    if head is not None:
        find_modules(model, head, f"the {task_type} head")
        if targets != ALL_LINEAR and head in targets:
            raise LmforgeError(
                f"tuning.lora.target: {head!r} is the new head, which trains whole; leave it out of the targets"
            )
        saved += [] if head in saved else [head]
    named = [m for name in spec.modules_to_save for m in find_modules(model, name, "tuning.lora.modules_to_save")]
    if targets != ALL_LINEAR:
        named += [m for name in targets for m in find_modules(model, name, "tuning.lora.target")]
    tie = _embeddings_tied(model) and any(_is_embedding_pair_member(model, m) for m in named)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        exclude_modules=[head] if head is not None else None,
        modules_to_save=saved or None,
        use_dora=dora,
        task_type=task_type,
        ensure_weight_tying=tie,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. a target that is a block, not a layer peft can adapt
        raise LmforgeError(
            f"tuning.lora: peft cannot adapt this model as asked ({str(err).splitlines()[0]}); target linear "
            f"layers such as {', '.join(_linear_leaf_names(model)[:8])}, or use {ALL_LINEAR!r}"
        ) from err


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks: a ModuleList named layers/h/blocks on the decoder, else anywhere unique."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for attr in LAYER_LIST_NAMES:
        found = getattr(decoder, attr, None)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES
    ]
    if len(candidates) == 1:
        return candidates[0][1]
    lists = [name for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    raise LmforgeError(
        f"tuning.freeze: cannot tell which ModuleList holds the decoder layers of {type(model).__name__} "
        f"(looked for one named {', '.join(LAYER_LIST_NAMES)}; lists here: {', '.join(lists[:8]) or 'none'}); "
        f"use method lora or full for this model"
    )


def find_modules(model: nn.Module, name: str, key: str) -> list[nn.Module]:
    """Modules whose full dotted name is `name` or ends with `.name`; an error naming alternatives if none."""
    found = [m for full, m in model.named_modules() if full and (full == name or full.endswith("." + name))]
    if not found:
        names = _short_names(model)
        close = difflib.get_close_matches(name, names, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise LmforgeError(
            f"{key}: {name!r} matches no module of {type(model).__name__}; {hint}names here include "
            f"{', '.join(names[:24])}"
        )
    return found


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each shared tensor counted once and 4-bit weights at their full size."""
    trainable = total = 0
    for param in model.parameters():
        count = _logical_numel(param)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def describe_trainable(model: nn.Module) -> str:
    """One line for the log: `trainable params: 1,024 (0.52%) of 196,608`."""
    trainable, total = parameter_counts(model)
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,} ({share:.2f}%) of {total:,}"


def _lora_targets(target: str | list[str]) -> str | list[str]:
    """`all-linear` as is; a single name is the same as a one-item list (not a regex, as peft would read it)."""
    if target == ALL_LINEAR:
        return ALL_LINEAR
    names = [target] if isinstance(target, str) else list(target)
    if not names:
        raise LmforgeError(f"tuning.lora.target: the list is empty; name linear layers or use {ALL_LINEAR!r}")
    return names


def _logical_numel(param: torch.Tensor) -> int:
    state = getattr(param, "quant_state", None)  # bitsandbytes Params4bit packs two weights per byte
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    return param.numel()


def _short_names(model: nn.Module) -> list[str]:
    """Distinct module names with layer indices dropped (`embed_tokens`, `q_proj`, `norm`...), in model order."""
    seen: dict[str, None] = {}
    for full, _ in model.named_modules():
        if full:
            seen.setdefault(full.rsplit(".", 1)[-1], None)
    return [name for name in seen if not name.isdigit()]


def _linear_leaf_names(model: nn.Module) -> list[str]:
    seen: dict[str, None] = {}
    for full, module in model.named_modules():
        if isinstance(module, nn.Linear):
            seen.setdefault(full.rsplit(".", 1)[-1], None)
    return list(seen)


def _embeddings_tied(model: nn.Module) -> bool:
    if not (hasattr(model, "get_input_embeddings") and hasattr(model, "get_output_embeddings")):
        return False
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    return inp is not None and out is not None and inp.weight is out.weight


def _is_embedding_pair_member(model: nn.Module, module: nn.Module) -> bool:
    return module is model.get_input_embeddings() or module is model.get_output_embeddings()


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
