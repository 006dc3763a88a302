"""Exact parameter counts of a recipe's model, built on the meta device: shapes without storage, no weights read.

The model is built from its config as `lmforge train` would build it (the tokenizer's vocabulary included) and
the tuning method applied through the same code (`model.adapters`), so LoRA and DoRA adapters are peft's own
modules and the trainable count is the one training prints. QLoRA's 4-bit base cannot be quantised on the meta
device; its adapters are counted on the unquantised shapes and the base's linear layers are priced at 4 bits
in memory.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lmforge.config.recipe import Recipe
from lmforge.errors import LmforgeError
from lmforge.model.adapters import SEQ_CLS, apply_lora, apply_tuning, decoder_layers
from lmforge.model.load import REWARD_HEAD, match_vocab, model_config, resolve_dtype

LORA_METHODS = ("lora", "dora", "qlora")


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder the activation and FLOP estimates need."""

    layers: int
    hidden: int
    q_dim: int  # attention heads x head size
    kv_dim: int  # key/value heads x head size (grouped-query attention: less than q_dim)
    heads: int
    intermediate: int
    vocab: int
    model_type: str


@dataclass(frozen=True)
class Counts:
    """Parameters of the model as the recipe trains it (each tied tensor once)."""

    total: int
    trainable: int
    base_linear: int  # weights of the decoder layers' linear layers (what QLoRA stores in 4 bit)
    matmul: int  # weights every token multiplies with: all linear layers, the output layer included
    largest_layer: int  # the biggest decoder layer (what FSDP / ZeRO-3 gather at once)
    lm_head_trains: bool
    weight_bytes: int  # bytes of one element of the weights (the model's dtype)
    trainable_bytes: int  # bytes of one element of a trainable parameter (peft keeps adapters in fp32)
    shape: Shape


def count_parameters(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> Counts:
    """Build the recipe's model on the meta device, apply its tuning and count."""
    spec = recipe.model
    config = model_config(spec if spec.init == "from_config" else spec.model_copy(update={"config": None}))
    dtype = planned_dtype(recipe.model.dtype)
    reward = recipe.stage == "rm"  # a reward model: the decoder with a one-output head instead of lm_head
    if reward:
        config = copy.deepcopy(config)
        config.num_labels = 1
    build = AutoModelForSequenceClassification if reward else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = build.from_config(config, dtype=dtype, trust_remote_code=recipe.model.trust_remote_code)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise LmforgeError(
            f"model.path: cannot build a causal LM from the {config.model_type!r} config of {recipe.model.path} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    base_linear, largest = _decoder_sizes(model)
    match_vocab(model, tokenizer)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    tuning = recipe.tuning
    head = {"task_type": SEQ_CLS, "head": REWARD_HEAD} if reward else {}
    if tuning.method == "qlora":  # the 4-bit load cannot happen on meta; the adapters are the same
        model = apply_lora(model, tuning.lora, **head)
    else:
        model = apply_tuning(model, tuning, **head)
    trainable = [p for p in model.parameters() if p.requires_grad]
    output = model.get_output_embeddings()
    return Counts(
        total=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in trainable),
        base_linear=base_linear,
        matmul=matmul,
        largest_layer=largest,
        lm_head_trains=output is not None and any(p.requires_grad for p in output.parameters()),
        weight_bytes=dtype.itemsize,
        trainable_bytes=4 if tuning.method in LORA_METHODS else dtype.itemsize,
        shape=shape_of(config, model.get_input_embeddings().weight.shape[0]),
    )


def planned_dtype(name: str) -> torch.dtype:
    """The weights' dtype on the accelerator planned for: `auto` is bf16 there (every GPU plan knows has it),
    whatever this machine has."""
    return torch.bfloat16 if name == "auto" else resolve_dtype(name)


def shape_of(config, vocab: int) -> Shape:
    """The sizes of a decoder config (Llama, Qwen, Mistral, Gemma, Phi... names)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return Shape(
        layers=text.num_hidden_layers,
        hidden=hidden,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        heads=heads,
        intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
        vocab=vocab,
        model_type=text.model_type,
    )


def _decoder_sizes(model: nn.Module) -> tuple[int, int]:
    """(weights of the linear layers inside the decoder layers, parameters of the largest decoder layer)."""
    layers = decoder_layers(model)
    linear = sum(m.weight.numel() for layer in layers for m in layer.modules() if isinstance(m, nn.Linear))
    largest = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0)
    return linear, largest
