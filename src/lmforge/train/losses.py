"""Causal-LM cross-entropy computed from the final hidden states chunk by chunk, never holding full-vocab logits.

The standard loss builds logits for every token of the batch: (batch x length x vocab) floats, plus as many again
for log-softmax and for the gradient. With a 150k vocabulary that is most of a training step's memory. Here the
output layer and the cross-entropy run together over chunks of tokens: each chunk's logits are made, turned into
the loss and its gradients with respect to the hidden states and the output layer, and freed before the next
chunk. Gradients are computed during the forward pass (the backward only scales them), so nothing is recomputed
and peak memory holds one chunk of logits.

The result equals `transformers`' `ForCausalLMLoss` applied to `lm_head(hidden)`: labels are shifted inside,
`IGNORE_INDEX` tokens carry no loss, the loss is the mean over trained tokens, or their sum divided by
`num_items_in_batch` when the Trainer accumulates gradients over several batches. Models that transform their
logits after the output layer are covered for the transforms `head_transform` knows (Gemma's final soft-capping,
Cohere's `logit_scale`, Granite's `logits_scaling`); the trainer falls back to the model's own loss otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.data.examples import IGNORE_INDEX
from lmforge.errors import LmforgeError

AUTO_CHUNK_ELEMENTS = 2**26  # loss_chunk: auto sizes chunks to about this many logits (256 MiB in fp32)


@dataclass(frozen=True)
class HeadTransform:
    """What a model does to `lm_head`'s output before the loss: multiply by `scale`, then soft-cap at `softcap`."""

    scale: float = 1.0
    softcap: float | None = None


def head_transform(config) -> HeadTransform:
    """The logit transform a model config asks for (Gemma 2/3 soft-capping, Cohere and Granite scaling)."""
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:  # Cohere: logits * logit_scale
        scale = float(config.logit_scale)
    if getattr(config, "logits_scaling", None) is not None:  # Granite: logits / logits_scaling
        scale = 1.0 / float(config.logits_scaling)
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3: cap * tanh(logits / cap)
    return HeadTransform(scale=scale, softcap=float(softcap) if softcap else None)


def auto_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so one chunk holds about AUTO_CHUNK_ELEMENTS logits (a multiple of 64, at least 64)."""
    return max(64, AUTO_CHUNK_ELEMENTS // vocab_size // 64 * 64)


def chunked_causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    num_items_in_batch: torch.Tensor | int | None = None,
    transform: HeadTransform = HeadTransform(),
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy of next-token prediction from `hidden` (B, T, H) through the output layer `weight` (V, H).

    `labels` (B, T) are unshifted, as given to a Hugging Face causal LM. Returns a float32 scalar: the mean over
    trained tokens, or their sum / `num_items_in_batch` when that is given. A batch with no trained token gives
    NaN for the mean, as the standard loss does.
    """
    if chunk_size < 1:
        raise LmforgeError(f"chunked loss: chunk_size must be a positive number of tokens (got {chunk_size})")
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=ignore_index).reshape(-1)
    trained = (targets != ignore_index).nonzero().squeeze(1)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, trained)  # only trained tokens reach the head
    targets = targets.index_select(0, trained.to(targets.device))
    _check_targets(targets, weight.shape[0])
    total = _LinearCrossEntropy.apply(rows, weight, bias, targets, chunk_size, transform)
    if num_items_in_batch is None:
        return total / trained.numel()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _check_targets(targets: torch.Tensor, vocab_size: int) -> None:
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
        raise LmforgeError(
            f"chunked loss: a label id lies outside the output layer's vocabulary of {vocab_size} "
            f"(labels range {int(targets.min())}..{int(targets.max())}); labels must be token ids or "
            f"{IGNORE_INDEX} — check that the tokenizer and the model belong together"
        )


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy over rows of `hidden @ weight.T + bias`, gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, transform):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        w = weight.to(hidden.dtype)  # one cast for all chunks (a copy only under mixed precision)
        b = bias.to(hidden.dtype) if bias is not None else None
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            part = slice(start, start + chunk_size)
            rows = hidden[part]
            loss, grad_logits = _chunk_loss_and_grad(rows, w, b, targets[part], transform, need_h or need_w or need_b)
            total += loss
            if grad_logits is None:
                continue
            if need_h:
                grad_hidden[part] = grad_logits.to(hidden.dtype) @ w
            if need_w:
                grad_weight.addmm_(grad_logits.t(), rows.float())
            if need_b:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(
            grad_hidden,
            grad_weight.to(weight.dtype) if need_w else None,
            grad_bias.to(bias.dtype) if need_b else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_output):
        # In place: these buffers belong to this call alone, and a weight-sized copy would cost what chunking saves.
        grads = [g.mul_(grad_output.to(g.dtype)) if g is not None else None for g in ctx.saved_tensors]
        return (*grads, None, None, None)


def _chunk_loss_and_grad(rows, weight, bias, targets, transform: HeadTransform, need_grad: bool):
    """Summed cross-entropy of one chunk and, if asked, its float32 gradient with respect to the head's output."""
    logits = rows @ weight.t()
    if bias is not None:
        logits = logits + bias
    logits = logits.float()  # the standard loss upcasts too
    if transform.scale != 1.0:
        logits = logits * transform.scale
    if transform.softcap is not None:
        capped = torch.tanh(logits / transform.softcap)
        logits = capped * transform.softcap
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = (lse - picked).sum()
    if not need_grad:
        return loss, None
    grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
    grad.scatter_add_(1, targets.unsqueeze(1), torch.full_like(picked, -1.0).unsqueeze(1))
    if transform.softcap is not None:
        grad.mul_(1 - capped.square())
    if transform.scale != 1.0:
        grad.mul_(transform.scale)
    return loss, grad
