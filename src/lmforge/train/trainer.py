"""The pt/sft trainer: a `transformers.Trainer` that knows packed masks, counts trained tokens (metrics.py) and
can compute the loss in chunks from the hidden states (see `losses.py`). The preference stages have theirs in
preference.py."""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import Trainer
from transformers.modeling_outputs import CausalLMOutput
from transformers.trainer_pt_utils import LengthGroupedSampler

from lmforge.console import say
from lmforge.data.rows import ExampleRows
from lmforge.errors import LmforgeError
from lmforge.train import ranks
from lmforge.train.collate import additive_mask
from lmforge.train.guards import RunGuards
from lmforge.train.losses import auto_chunk_size, chunked_causal_lm_loss, head_transform
from lmforge.train.metrics import TokenCounter


class LmforgeTrainer(RunGuards, Trainer):
    """Adds to Trainer what lmforge owns: packed-batch masks, trained-tokens-per-second logging and the chunked
    loss (`loss_chunk`: tokens per chunk, "auto" or "off"; see `resolve_loss_chunk`)."""

    def __init__(self, *args: Any, loss_chunk: int | str = "off", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_chunk = resolve_loss_chunk(self.model, loss_chunk, sharding=_sharding(self))
        self.tokens = TokenCounter(ranks.sum_across)

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        """group_by_length reads the lengths of lmforge's rows from their arrays: Trainer takes lengths from a
        `datasets.Dataset` column only, and otherwise builds every example to measure it (0.5 s for 100k
        examples of ~500 tokens)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, ExampleRows):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(batch, lengths=dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 4 and mask.dtype == torch.bool:
            inputs = {**inputs, "attention_mask": additive_mask(mask, _compute_dtype(model))}
        if model.training and "labels" in inputs:
            self.tokens.add(inputs["labels"])
        if self.loss_chunk is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._chunked_loss(model, inputs, return_outputs, num_items_in_batch)

    def _chunked_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The model's loss, computed from its final hidden states without full-vocabulary logits.

        The model runs through its wrappers (peft, DDP, compile) as usual but keeps the logits of one position
        only; the chunked loss then applies the output layer to the hidden states itself. The loss is scaled
        like `Trainer.compute_loss` scales a model's own loss, so gradient accumulation sees no difference.
        """
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**forward, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        hidden = outputs.hidden_states[-1] if outputs.hidden_states else None
        if hidden is None:
            raise LmforgeError(
                f"train.loss_chunk: {type(_base_model(model)).__name__} returned no final hidden states with "
                f"output_hidden_states=True, which the chunked loss needs; set train.loss_chunk: off"
            )
        # Like Trainer.compute_loss: the token count reaches the loss only for models that take loss kwargs.
        num_items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        head = output_layer(model)
        loss = chunked_causal_lm_loss(
            hidden,
            head.weight,
            labels.to(hidden.device),
            bias=head.bias,
            chunk_size=self.loss_chunk,
            num_items_in_batch=num_items,
            transform=head_transform(_base_model(model).config),
        )
        if self.args.average_tokens_across_devices and num_items is not None:
            scale = self.accelerator.num_processes // self.get_tp_size()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, CausalLMOutput(loss=loss)) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self.tokens.log_into(logs)
        super().log(logs, start_time)


def resolve_loss_chunk(model: torch.nn.Module, setting: int | str, sharding: str | None = None) -> int | None:
    """Tokens per loss chunk for `train.loss_chunk` on this model, or None for the model's own loss.

    auto chunks whenever the chunked loss equals the model's own: besides never holding full-vocabulary logits,
    it sends only the trained tokens through the output layer, so it is also the faster one where prompts carry
    no loss (3-5 % a step on the CPU benchmark's 2,048-token vocabulary, same loss). `sharding` names the
    engine that will shard the output layer's weight (FSDP2, ZeRO-3): the chunked loss reads that weight outside
    the model's forward, where it is then a shard or an empty placeholder, so it is not used there.
    """
    if setting == "off" or (setting == "auto" and _base_model(model).get_output_embeddings() is None):
        return None
    head = output_layer(model)
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    reason = _why_not_chunked(model, head) or (
        f"{sharding} shards the output layer's weight, which the chunked loss reads outside the forward"
        if sharding
        else None
    )
    if reason and setting == "auto":
        say(f"lmforge: train.loss_chunk auto: using the model's own loss because {reason}")
        return None
    if reason:
        raise LmforgeError(
            f"train.loss_chunk: {setting} cannot be used because {reason}; set train.loss_chunk: off (or auto)"
        )
    chunk = auto_chunk_size(vocab) if setting == "auto" else int(setting)
    say(f"lmforge: loss computed in chunks of {chunk} tokens through the output layer (vocabulary {vocab})")
    return chunk


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The model's output layer (lm_head), found through peft and accelerate wrappers."""
    head = _base_model(model).get_output_embeddings()
    if head is None:
        raise LmforgeError(
            f"train.loss_chunk: {type(_base_model(model)).__name__} has no output layer (get_output_embeddings() "
            f"is None); set train.loss_chunk: off"
        )
    return head


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    model = extract_model_from_parallel(model, keep_torch_compile=False)  # DDP, DeepSpeed, torch.compile
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def _sharding(trainer: Trainer) -> str | None:
    """The engine that shards parameters outside the forward in this run (None: every rank holds them whole)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return "FSDP"
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return "DeepSpeed ZeRO-3" if is_deepspeed_zero3_enabled() else None


def sharded_weight(weight: torch.Tensor) -> bool:
    """A weight that is one rank's shard (FSDP2's DTensor) or ZeRO-3's placeholder, not the whole matrix."""
    from torch.distributed.tensor import DTensor

    return isinstance(weight, DTensor) or hasattr(weight, "ds_id") or weight.numel() == 0


def _why_not_chunked(model: torch.nn.Module, head: torch.nn.Module) -> str | None:
    """Why the chunked loss would not equal this model's own loss, or None when it does."""
    config = _base_model(model).config
    if getattr(config, "output_router_logits", False):
        return "the model adds a router auxiliary loss to its own (config.output_router_logits)"
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder"
    layer = head.modules_to_save[head.active_adapters[0]] if hasattr(head, "modules_to_save") else head
    weight = getattr(layer, "weight", None)
    if type(layer) is not torch.nn.Linear or weight is None or not weight.is_floating_point():
        return (
            f"its output layer is a {type(layer).__name__}, not a plain Linear layer (an adapter or "
            f"quantisation on lm_head)"
        )
    if sharded_weight(weight):
        return "its output layer's weight is sharded (FSDP2 DTensor or DeepSpeed ZeRO-3), not whole on each rank"
    return None


def _compute_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32
