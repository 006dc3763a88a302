"""Peak accelerator memory of one training step on one device, term by term, from the counts and the shape.

Each term counts the tensors lmforge's training step holds (read off the code it runs; bench/plan_accuracy.py
checks the sum against measured peaks):

- weights in the model's dtype (QLoRA: the decoder's linear layers in 4 bit with their quantisation constants),
  trainable parameters in their own dtype (peft keeps adapters in fp32);
- gradients of the trainable parameters, and optimizer states (AdamW: two per parameter, in its dtype);
- activations kept for the backward pass, per decoder layer and token (`layer_elements`): the norms' inputs and
  outputs, q/k/v after RoPE, the attention output and its contiguous copy, the MLP's gate, up, SiLU and product
  (a fused attention kernel keeps no length x length scores); LoRA dropout and DoRA keep more per adapted
  layer. With activation checkpointing a layer keeps only its input, and the backward pass recomputes one
  layer at a time;
- the loss: the model's own keeps the batch's full-vocabulary logits, a float32 copy, the log-softmax and its
  gradient; the chunked loss (train/losses.py) keeps the gradient of the hidden states, the trained rows and one
  chunk of float32 logits; the preference losses keep the policy's logits and a float32 row;
- DPO and KTO: the reference model's weights (`preference.reference: copy`) and its logits, unless the reference
  log-probs are precomputed;
- sharding: ZeRO-1 divides the optimizer states among the devices, ZeRO-2 the gradients too, ZeRO-3 and FSDP2
  the weights as well, plus the one decoder layer gathered at a time (and the next, prefetched); DDP keeps its
  gradient buckets beside the gradients.

The peak is the static part (weights, reference, optimizer states) plus the larger of what the forward pass
leaves for the backward (activations, loss, gradients made during the forward) and the full set of gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # counts.py builds models (torch, transformers): not needed to read the constants here
    from lmforge.plan.counts import Counts, Shape

FP32 = 4
QLORA_BITS = 4 + 0.127  # nf4 with double quantisation: 4 bits and about 0.127 bits of constants per weight
STRATEGIES = ("ddp", "fsdp2", "zero1", "zero2", "zero3")
PAIRED_STAGES = ("rm", "dpo", "simpo", "orpo")  # a batch row is a pair: chosen and rejected run together
# Optimizer states in bytes per trainable parameter of `b` bytes, by TrainingArguments.optim.
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": lambda b: 2 * b,
    "adamw_torch_fused": lambda b: 2 * b,
    "adamw_hf": lambda b: 2 * b,
    "adamw_8bit": lambda b: 2,
    "adamw_bnb_8bit": lambda b: 2,
    "paged_adamw_8bit": lambda b: 2,
    "sgd": lambda b: 0,
    "adafactor": lambda b: 0,  # factored second moments: a row and a column per matrix, no first moment
}
DEFAULT_OPTIMIZER = "adamw_torch"
ADAPTER_METHODS = ("lora", "dora", "qlora")


@dataclass(frozen=True)
class Setup:
    """What a training step does, per device."""

    batch: int  # rows per forward pass (pairs for pair stages)
    seq: int  # tokens per row (max_length: the longest a batch can be)
    stage: str = "sft"
    method: str = "full"
    checkpointing: bool = False
    loss_chunk: int | None = None  # tokens per chunk of the chunked loss; None: the model's own loss
    reference: str | None = None  # copy, adapter, precomputed, or None (no reference)
    lora_dropout: bool = False
    grad_layers: int | None = None  # decoder layers the backward pass reaches (freeze: the trained ones); None: all
    optimizer: str = DEFAULT_OPTIMIZER
    strategy: str = "ddp"
    gpus: int = 1

    @property
    def rows(self) -> int:
        """Sequences in one forward pass: pair stages run chosen and rejected together."""
        return self.batch * (2 if self.stage in PAIRED_STAGES else 1)


@dataclass
class Estimate:
    """Bytes per device by term, and the peak."""

    terms: dict[str, int] = field(default_factory=dict)
    peak: int = 0


def layer_elements(shape: Shape, adapters: bool = False, lora_dropout: bool = False, dora: bool = False) -> int:
    """Activation elements one decoder layer keeps per token for the backward pass (see the module docstring).

    adapters: the base weights are frozen (LoRA, DoRA, QLoRA), so each norm keeps no copy of its normalised
    input for its weight's gradient (2 x hidden fewer). lora_dropout: each adapted layer keeps its input after
    dropout (and a one-byte mask, `dropout_masks`). dora: each adapted layer also keeps its base output and its
    adapter's output, which the magnitude's gradient needs (peft's DoRA scales both by magnitude / norm)."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    norms = 2 * (2 if adapters else 3) * h
    kept = norms + (q + 2 * kv) + 2 * q + 4 * i
    outputs = q + 2 * kv + h + 2 * i + h  # q, k, v, o, gate, up, down
    return kept + (dropout_masks(shape) if lora_dropout else 0) + (2 * outputs if dora else 0)


def dropout_masks(shape: Shape) -> int:
    """Elements LoRA dropout draws per token and layer: q, k, v, gate and up read hidden; o reads q; down reads
    the intermediate size."""
    return 5 * shape.hidden + shape.q_dim + shape.intermediate


def estimate(counts: Counts, setup: Setup) -> Estimate:
    """Peak bytes per device of one training step (see the module docstring for each term)."""
    shape, n = counts.shape, setup.gpus
    terms = {
        "weights": _weights(counts, setup.method),
        "reference model": _reference_weights(counts, setup),
        "gradients": counts.trainable * counts.trainable_bytes,
        "optimizer states": counts.trainable * OPTIMIZER_STATE_BYTES[setup.optimizer](counts.trainable_bytes),
    }
    if setup.strategy in ("zero1", "zero2", "zero3", "fsdp2"):
        terms["optimizer states"] //= n
    if setup.strategy in ("zero2", "zero3", "fsdp2"):
        terms["gradients"] //= n
    if setup.strategy in ("zero3", "fsdp2"):
        terms["weights"] //= n
        terms["gathered layers"] = 2 * counts.largest_layer * counts.weight_bytes if n > 1 else 0
    if setup.strategy == "ddp" and n > 1:
        terms["gradient buckets"] = terms["gradients"]
    terms["activations"] = activation_bytes(shape, setup, counts.weight_bytes)
    terms["loss"] = loss_bytes(counts, setup)
    static = sum(v for k, v in terms.items() if k not in ("gradients", "activations", "loss"))
    forward = terms["activations"] + terms["loss"]
    return Estimate(terms, static + max(forward, terms["gradients"]))


def activation_bytes(shape: Shape, setup: Setup, dtype_bytes: int) -> int:
    """What the forward pass keeps for the backward: every layer's activations, or with checkpointing each
    layer's input and one layer recomputed; plus the final norm's."""
    tokens = setup.rows * setup.seq
    adapters = setup.method in ADAPTER_METHODS
    per_layer = layer_elements(shape, adapters, setup.lora_dropout and adapters, setup.method == "dora")
    layers = setup.grad_layers or shape.layers  # layers below the lowest trained one keep nothing
    holding = 1 if setup.checkpointing else layers  # layers holding all their activations at once
    kept = (layers * shape.hidden if setup.checkpointing else 0) + holding * per_layer
    final_norm = (2 if adapters else 3) * shape.hidden
    masks = holding * dropout_masks(shape) if setup.lora_dropout and adapters else 0  # bool: one byte each
    # RMSNorm computes in float32 (transformers' Llama, Qwen, Mistral...): under bf16/fp16 the input it keeps is a
    # float32 copy, (4 - dtype_bytes) more bytes a hidden element for each norm holding its activations.
    upcast = (2 * holding + 1) * shape.hidden * (FP32 - dtype_bytes)
    return tokens * ((kept + final_norm) * dtype_bytes + masks + upcast)


def loss_bytes(counts: Counts, setup: Setup) -> int:
    """The loss's buffers at their largest, and the reference model's logits (see the module docstring)."""
    shape, b = counts.shape, counts.weight_bytes
    tokens = setup.rows * setup.seq
    if setup.stage in ("dpo", "simpo", "orpo", "kto"):
        held = tokens * shape.vocab * (b + FP32 + (0 if b == FP32 else FP32))
        if setup.reference in ("copy", "adapter"):
            held += tokens * shape.vocab * b + setup.seq * shape.vocab * FP32
        return held
    if setup.stage == "rm":
        return 0  # one output per row
    if setup.loss_chunk is None:
        return tokens * shape.vocab * (b + (0 if b == FP32 else FP32) + 3 * FP32)
    held = 2 * tokens * shape.hidden * b + 2 * min(setup.loss_chunk, tokens) * shape.vocab * FP32
    if counts.lm_head_trains and b != FP32:
        held += shape.vocab * shape.hidden * FP32  # the head's gradient summed in float32 during the forward
    return held


def largest_batch(counts: Counts, setup: Setup, budget: int, limit: int = 4096) -> int:
    """The most rows per device whose estimated peak stays within `budget` bytes (0: not even one)."""
    from dataclasses import replace

    fits = 0
    for batch in range(1, limit + 1):
        if estimate(counts, replace(setup, batch=batch)).peak > budget:
            break
        fits = batch
    return fits


def _weights(counts: Counts, method: str) -> int:
    frozen = counts.total - counts.trainable
    if method == "qlora":
        rest = frozen - counts.base_linear
        return int(counts.base_linear * QLORA_BITS / 8) + rest * counts.weight_bytes + counts.trainable * FP32
    return frozen * counts.weight_bytes + counts.trainable * counts.trainable_bytes


def _reference_weights(counts: Counts, setup: Setup) -> int:
    if setup.reference != "copy":
        return 0
    adapters = counts.trainable if setup.method in ADAPTER_METHODS else 0
    return (counts.total - adapters) * counts.weight_bytes
