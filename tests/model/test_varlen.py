"""lmforge_varlen: padding-free attention with PyTorch's varlen kernel, and SDPA wherever the kernel does not apply.

Packed batches are checked in tests/train/test_packing_equivalence.py; here: batches that are not packed
(padding, generation with a KV cache) give what sdpa gives, samples are found from position ids alone,
and on CUDA the bf16 kernel agrees with SDPA run per sample, forward and backward.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from lmforge.config.recipe import ModelSpec, TuningSpec
from lmforge.model import varlen
from lmforge.model.load import load_model
from lmforge.train.collate import Collator, is_varlen, varlen_kwargs

TOL = 1e-5


SHAPE = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    attn_implementation="sdpa",
    pad_token_id=0,
)


def twins(model_class, config):
    """The same random model twice: one on sdpa, one on lmforge_varlen."""
    torch.manual_seed(0)
    sdpa = model_class(config).eval()
    ours = model_class(copy.deepcopy(config)).eval()
    ours.load_state_dict(sdpa.state_dict())
    ours.set_attn_implementation(varlen.NAME)
    return sdpa, ours


def pair_of_models() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    return twins(LlamaForCausalLM, LlamaConfig(**SHAPE))


def test_the_collator_serves_it_padding_free_batches_with_cu_seqlens():
    assert is_varlen(varlen.NAME)
    batch = Collator(pad_token_id=0, attn_implementation=varlen.NAME)(
        [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]}]
    )
    assert batch["input_ids"].shape == (1, 5) and "attention_mask" not in batch
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5]


def test_padded_batches_give_what_sdpa_gives_on_every_real_token():
    sdpa, ours = pair_of_models()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        want = sdpa(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0], want[0], atol=TOL, rtol=0)
    torch.testing.assert_close(got[1, :3], want[1, :3], atol=TOL, rtol=0)


def test_generation_with_a_kv_cache_and_left_padding_matches_sdpa():
    sdpa, ours = pair_of_models()
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    settings = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        want = sdpa.generate(ids, output_scores=True, return_dict_in_generate=True, **settings)
        got = ours.generate(ids, output_scores=True, return_dict_in_generate=True, **settings)
    assert got.sequences.tolist() == want.sequences.tolist()
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_samples_are_found_from_position_ids_when_no_cu_seqlens_are_given():
    _, ours = pair_of_models()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    with torch.no_grad():
        from_positions = ours(input_ids=ids, position_ids=positions).logits
        given = ours(input_ids=ids, position_ids=positions, **varlen_kwargs(positions)).logits
        second_alone = ours(input_ids=ids[:, 3:]).logits
    torch.testing.assert_close(from_positions, given, atol=TOL, rtol=0)
    torch.testing.assert_close(from_positions[0, 3:], second_alone[0], atol=TOL, rtol=0)


def test_attention_dropout_is_refused():
    module = torch.nn.Module()
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match="dropout"):
        varlen.varlen_attention_forward(module, q, q, q, None, dropout=0.1)


def sliding_window_pair(window: int) -> tuple[MistralForCausalLM, MistralForCausalLM]:
    return twins(MistralForCausalLM, MistralConfig(sliding_window=window, **SHAPE))


def test_a_sliding_window_is_kept_in_packed_rows_and_in_padded_batches():
    sdpa, ours = sliding_window_pair(window=3)
    first, second = [5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16]
    packed = torch.tensor([first + second])
    positions = torch.tensor([list(range(7)) + list(range(5))])
    padded = torch.tensor([first, second + [0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0, 0]])
    with torch.no_grad():
        alone = [sdpa(input_ids=torch.tensor([ids])).logits[0] for ids in (first, second)]
        full_window = sliding_window_pair(window=64)[0](input_ids=torch.tensor([first])).logits[0]
        got_packed = ours(input_ids=packed, position_ids=positions, **varlen_kwargs(positions)).logits[0]
        got_padded = ours(input_ids=padded, attention_mask=mask).logits
    assert (alone[0] - full_window).abs().max() > 1e-3  # the window changes the logits: the test can fail
    torch.testing.assert_close(got_packed[:7], alone[0], atol=TOL, rtol=0)
    torch.testing.assert_close(got_packed[7:], alone[1], atol=TOL, rtol=0)
    torch.testing.assert_close(got_padded[0], alone[0], atol=TOL, rtol=0)
    torch.testing.assert_close(got_padded[1, :5], alone[1], atol=TOL, rtol=0)


def test_a_sliding_window_is_kept_when_generating_with_a_kv_cache():
    sdpa, ours = sliding_window_pair(window=3)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        want = sdpa.generate(ids, **settings)
        got = ours.generate(ids, **settings)
    assert got.sequences.tolist() == want.sequences.tolist()
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_what_it_cannot_compute_is_refused_by_name():
    config = Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        attn_logit_softcapping=50.0,
        attn_implementation="eager",
    )
    model = Gemma2ForCausalLM(config).eval()
    model.set_attn_implementation(varlen.NAME)
    with pytest.raises(ValueError, match="soft-capping.*Gemma2Attention.*eager"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_a_recipe_can_name_it(tiny_model_dir):
    model = load_model(
        ModelSpec(path=str(tiny_model_dir), attn_implementation=varlen.NAME, dtype="fp32"), TuningSpec(method="full")
    )
    assert model.config._attn_implementation == varlen.NAME


@pytest.mark.skipif(
    not (torch.cuda.is_available() and varlen.kernel_available()),
    reason="the varlen flash kernel needs CUDA (checked on a GPU machine)",
)
@pytest.mark.parametrize("window", [None, 16])
def test_the_cuda_kernel_agrees_with_sdpa_per_sample_forward_and_backward(window):
    torch.manual_seed(0)
    lengths = [37, 5, 128, 64, 1, 90]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    total = sum(lengths)
    q = torch.randn(1, 8, total, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 2, total, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 2, total, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    module = torch.nn.Module()
    got, _ = varlen.varlen_attention_forward(
        module, q, k, v, None, cu_seq_lens_q=bounds, max_length_q=max(lengths), sliding_window=window
    )

    def alone(a: int, b: int) -> torch.Tensor:
        rows, cols = torch.arange(b - a, device="cuda")[:, None], torch.arange(b - a, device="cuda")[None, :]
        allowed = (cols <= rows) & ((cols > rows - window) if window else True)
        return F.scaled_dot_product_attention(
            q[:, :, a:b].float(), k[:, :, a:b].float(), v[:, :, a:b].float(), attn_mask=allowed, enable_gqa=True
        )

    want = torch.cat([alone(a, b) for a, b in zip(bounds.tolist(), bounds.tolist()[1:])], dim=2).transpose(1, 2)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)
    grad = torch.randn_like(want)
    got_grads = torch.autograd.grad(got.float(), (q, k, v), grad)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)
