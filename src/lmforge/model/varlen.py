"""Padding-free attention with PyTorch's own kernels: `model.attn_implementation: lmforge_varlen`.

Packed training wants attention that stays inside each sample without a (tokens x tokens) mask. The
flash-attn package does that with its varlen kernel, but it has to be built for each torch and CUDA
pair and often is not installed. PyTorch (>= 2.9) ships the same FlashAttention-2 varlen kernel as
`torch.nn.attention.varlen.varlen_attn`; this implementation calls it, so packing on a GPU is
padding-free with nothing extra to install.

It is registered with transformers' public `AttentionInterface` (and its mask interface, with the same
mask rule as flash attention: no mask unless there is padding). The collator treats it like flash
attention: one row of samples back to back, `cu_seq_lens_q/k` and `max_length_q/k` in the batch.
What runs where:
- cu_seqlens given (or found from position ids that restart inside one row), CUDA, fp16/bf16: one
  `varlen_attn` call per layer.
- cu_seqlens on CPU or in fp32: SDPA once per sample, causal. One call per sample, but no attention
  between samples is computed: on the CPU benchmark (bench/sft_throughput.py) this trained 1.2x the
  tokens/s of `sdpa` packing with its block-diagonal mask.
- no samples to separate (evaluation, generation): SDPA with a causal mask, padding from the 2D mask.
Sliding-window layers (Mistral, Gemma 3's local layers, Qwen2 with use_sliding_window) keep their
window on every path: the kernel's left window, a banded mask for SDPA. What none of these paths can
compute (attention logit soft-capping, attention sinks, non-causal attention, position biases) is
refused with a ValueError instead of being silently dropped.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

NAME = "lmforge_varlen"
KERNEL_DTYPES = (torch.float16, torch.bfloat16)
CAUSAL = (-1, 0)  # varlen_attn's window (left, right): any distance back, nothing ahead


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query (B, H, Tq, D), key/value (B, Hkv, Tk, D); returns (B, Tq, H, D)."""
    if dropout:
        raise ValueError(f"{NAME} runs without attention dropout; set the model's attention_dropout to 0")
    _refuse_what_it_cannot_compute(module, kwargs)
    window = kwargs.get("sliding_window")
    cu_seqlens = _cu_seqlens(query, key, attention_mask, kwargs)
    if cu_seqlens is None:
        out = _masked_sdpa(query, key, value, attention_mask, scaling, window)
    elif query.is_cuda and query.dtype in KERNEL_DTYPES and kernel_available():
        out = _kernel(query, key, value, cu_seqlens, int(kwargs.get("max_length_q") or 0), scaling, window)
    else:
        out = _per_sample_sdpa(query, key, value, cu_seqlens, scaling, window)
    return out.transpose(1, 2).contiguous(), None


UNSUPPORTED = {
    "softcap": "attention logit soft-capping",
    "s_aux": "attention sinks",
    "sinks": "attention sinks",
    "position_bias": "a relative position bias",
}


def cannot_compute(model: torch.nn.Module) -> str | None:
    """What of a loaded model's attention this implementation cannot compute (read from its config and its
    attention modules), or None. The forward pass checks again with what the model actually passes."""
    config = getattr(model, "config", None)
    used = []
    if getattr(config, "attn_logit_softcapping", None) is not None:
        used.append(UNSUPPORTED["softcap"])
    for module in model.modules():
        if getattr(module, "is_causal", True) is False and "attention" in type(module).__name__.lower():
            used.append("non-causal attention")
            break
    if any(name.endswith("sinks") for name, _ in model.named_parameters()):
        used.append(UNSUPPORTED["sinks"])
    return " and ".join(used) or None


def _refuse_what_it_cannot_compute(module: torch.nn.Module, kwargs: dict) -> None:
    """The features some models pass to their attention function that this implementation has no way to apply."""
    used = [what for key, what in UNSUPPORTED.items() if kwargs.get(key) is not None]
    if kwargs.get("is_causal", True) is False or getattr(module, "is_causal", True) is False:
        used.append("non-causal attention")
    if used:
        raise ValueError(
            f"{NAME} cannot compute {' and '.join(used)}, which {type(module).__name__} uses; set "
            f"model.attn_implementation to eager (or a flash attention kernel that supports it)"
        )


@lru_cache(maxsize=1)
def kernel_available() -> bool:
    """Whether this PyTorch has the varlen flash kernel (torch.nn.attention.varlen, PyTorch >= 2.9)."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _cu_seqlens(query: torch.Tensor, key: torch.Tensor, attention_mask, kwargs: dict) -> torch.Tensor | None:
    """The samples' boundaries in a one-row batch: from the batch, or from position ids restarting at 0."""
    if query.shape[0] != 1 or query.shape[2] != key.shape[2] or attention_mask is not None:
        return None
    given = kwargs.get("cu_seq_lens_q")
    if given is not None:
        return given.to(device=query.device, dtype=torch.int32)
    positions = kwargs.get("position_ids")
    if positions is None or positions.shape[-1] != query.shape[2]:
        return None
    flat = positions.reshape(-1)
    if int((flat == 0).sum()) < 2 or int(flat[0]) != 0:
        return None  # one sample (plain causal attention does it), or positions that do not start at 0
    return cu_seqlens_from_positions(positions).to(query.device)


def cu_seqlens_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """int32 sample boundaries [0, ..., T] of one row of T tokens whose position ids restart at 0 per sample."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    end = torch.tensor([flat.numel()], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


def _kernel(query, key, value, cu_seqlens, longest: int, scaling, window: int | None) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    if not longest:
        longest = int(cu_seqlens.diff().max())
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    extra = {}
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in _kernel_parameters():
            extra["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = varlen_attn(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        cu_seqlens,
        cu_seqlens,
        longest,
        longest,
        scale=scaling,
        window_size=_window_size(window),
        **extra,
    )
    return out.transpose(0, 1).unsqueeze(0)  # (1, heads, tokens, dim)


@lru_cache(maxsize=1)
def _kernel_parameters() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _window_size(window: int | None) -> tuple[int, int]:
    """varlen_attn's (left, right) window: transformers' sliding_window counts the token itself, the kernel does not."""
    return CAUSAL if window is None else (window - 1, 0)


def _per_sample_sdpa(query, key, value, cu_seqlens, scaling, window: int | None) -> torch.Tensor:
    bounds = cu_seqlens.tolist()
    gqa = key.shape[1] != query.shape[1]
    spans = []
    for a, b in zip(bounds, bounds[1:]):
        if b <= a:
            continue
        band = _band(b - a, b - a, window, query.device)
        spans.append(
            F.scaled_dot_product_attention(
                query[:, :, a:b],
                key[:, :, a:b],
                value[:, :, a:b],
                attn_mask=band,
                is_causal=band is None,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
    return torch.cat(spans, dim=2)


def _band(q_len: int, k_len: int, window: int | None, device) -> torch.Tensor | None:
    """(Tq, Tk) boolean causal sliding-window mask for queries that are the last Tq of Tk positions; None when
    the window reaches back over every key (plain causal attention does it)."""
    if window is None or k_len <= window:
        return None
    rows = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    cols = torch.arange(k_len, device=device)[None, :]
    return (cols <= rows) & (cols > rows - window)


def _masked_sdpa(query, key, value, attention_mask, scaling, window: int | None) -> torch.Tensor:
    """Causal attention where queries are the last Tq of Tk positions; padding keys (2D mask 0) are masked."""
    q_len, k_len = query.shape[2], key.shape[2]
    gqa = key.shape[1] != query.shape[1]
    band = _band(q_len, k_len, window, query.device)
    if attention_mask is None and band is None and q_len in (1, k_len):
        return F.scaled_dot_product_attention(query, key, value, is_causal=q_len > 1, scale=scaling, enable_gqa=gqa)
    rows = torch.arange(k_len - q_len, k_len, device=query.device)
    allowed = band if band is not None else rows[:, None] >= torch.arange(k_len, device=query.device)[None, :]
    mask = allowed[None, None]  # (1, 1, Tq, Tk)
    if attention_mask is not None:
        keys = attention_mask[:, -k_len:].to(device=query.device, dtype=torch.bool)
        mask = mask & keys[:, None, None, :]
        mask = mask | (rows[:, None] == torch.arange(k_len, device=query.device)[None, :])[None, None]  # no empty row
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=gqa)


def register() -> None:
    """Make `lmforge_varlen` a valid `attn_implementation` (idempotent)."""
    AttentionInterface.register(NAME, varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)


register()
