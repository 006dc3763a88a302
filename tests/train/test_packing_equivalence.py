"""The test of record for packing: a packed batch trains each sample exactly as if it ran alone.

On a tiny Llama in fp32, for each attention backend the collator serves (SDPA and eager: 4D block
mask; flex attention: padding-free rows, BlockMask from the position ids; flash attention: padding-free
rows with cu_seqlens), per-sample losses and gradients of packed batches equal those of the same
samples run one by one within 1e-5, and changing one sample's tokens changes no other sample's logits.

Flash attention needs a GPU and the flash-attn package, so its path is checked with a reference varlen
attention registered under another name: it is served exactly what flash attention would be (no mask,
the cu_seqlens keyword arguments) and computes causal attention inside each sample. lmforge_varlen
(model/varlen.py) is checked for real; in fp32 it runs SDPA per sample on every device (its bf16 flash
kernel is checked in tests/model/test_varlen.py on CUDA). Flex attention runs for real on CPU, but
PyTorch has no flex backward on CPU, so its gradients are checked on CUDA only. On a machine with
CUDA every backend here runs there.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

from lmforge.data.build.packing import best_fit_decreasing, pack
from lmforge.data.examples import IGNORE_INDEX, Examples
from lmforge.data.rows import ExampleRows
from lmforge.model import varlen
from lmforge.train.collate import Collator, additive_mask

VOCAB, MAX_LENGTH, TOL = 64, 16, 1e-5
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
REFERENCE_VARLEN = "lmforge_reference_varlen"
LENGTHS = [7, 5, 9, 3, 11, 4, 6]  # 45 tokens: 3 rows of 16 with BFD ([11, 5], [9, 7], [6, 4, 3])


def reference_varlen_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    cu_seq_lens_q=None,
    cu_seq_lens_k=None,
    **kwargs,
):
    """Causal attention inside each [cu[i], cu[i+1]) span of a (1, heads, tokens, dim) batch: flash varlen's job."""
    assert attention_mask is None, "flash attention is served no mask"
    assert cu_seq_lens_q is None or torch.equal(cu_seq_lens_q, cu_seq_lens_k)
    cu = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else [0, query.shape[2]]
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    spans = [
        F.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling
        )
        for a, b in zip(cu, cu[1:])
    ]
    return torch.cat(spans, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(REFERENCE_VARLEN, reference_varlen_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(REFERENCE_VARLEN, flash_attention_mask)

# (model attention implementation, what the collator is told the model runs)
BACKENDS = {
    "sdpa": ("sdpa", "sdpa"),
    "eager": ("eager", "eager"),
    "flex": ("flex_attention", "flex_attention"),
    "flash_varlen": (REFERENCE_VARLEN, "flash_attention_2"),
    "lmforge_varlen": (varlen.NAME, varlen.NAME),
}


def make_samples(lengths: list[int], seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(1, VOCAB, (n,), generator=g).tolist()
        trained = torch.rand(n, generator=g) < 0.7
        labels = [t if keep else IGNORE_INDEX for t, keep in zip(ids, trained.tolist())]
        labels[-1] = ids[-1]  # every sample trains at least one token
        out.append({"input_ids": ids, "labels": labels})
    return out


@pytest.fixture(scope="module")
def models() -> dict[str, LlamaForCausalLM]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="sdpa",
    )
    base = LlamaForCausalLM(config).eval()  # head dim 16: flex attention's GPU kernel needs >= 16
    out = {}
    for name, (impl, _) in BACKENDS.items():
        model = LlamaForCausalLM(copy.deepcopy(config)).eval()  # each model its own config
        model.load_state_dict(base.state_dict())
        model.set_attn_implementation(impl)
        assert model.config._attn_implementation == impl
        out[name] = model.to(DEVICE)
    return out


def packed_batch(backend: str, samples: list[dict]) -> tuple[dict, list[tuple[int, int, int]]]:
    """The collated packed batch as the trainer feeds it, and where each sample sits: (row, start, length)."""
    rows = list(ExampleRows(pack(Examples.from_dicts(samples), MAX_LENGTH)[0]))
    bins = best_fit_decreasing([len(s["input_ids"]) for s in samples], MAX_LENGTH)
    batch = Collator(pad_token_id=0, attn_implementation=BACKENDS[backend][1])(rows)
    batch = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 4 and mask.dtype == torch.bool:  # as LmforgeTrainer.compute_loss does
        batch["attention_mask"] = additive_mask(mask, torch.float32)
    where: list[tuple[int, int, int] | None] = [None] * len(samples)
    padding_free = "attention_mask" not in batch
    offset = 0
    for r, members in enumerate(bins):
        start = offset if padding_free else 0
        for i in members:
            n = len(samples[i]["input_ids"])
            where[i] = (0 if padding_free else r, start, n)
            start += n
        offset += len(rows[r]["input_ids"])
    return batch, where


def sample_loss_sum(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Summed next-token cross-entropy of one sample from its own logits (length n x vocab)."""
    target = torch.tensor(labels[1:], device=logits.device)
    return F.cross_entropy(logits[:-1], target, ignore_index=IGNORE_INDEX, reduction="sum")


def alone(model, sample: dict) -> torch.Tensor:
    return model(input_ids=torch.tensor([sample["input_ids"]], device=DEVICE), use_cache=False).logits[0]


def packed_logits(model, batch: dict) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_collated_batch_layout(backend):
    samples = make_samples(LENGTHS)
    batch, where = packed_batch(backend, samples)
    if backend in ("sdpa", "eager"):
        assert batch["attention_mask"].shape == (3, 1, MAX_LENGTH, MAX_LENGTH)
    else:  # padding-free: one row of every token, no mask
        assert batch["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in batch
    if backend in ("flash_varlen", "lmforge_varlen"):
        starts = sorted(start for _, start, _ in where)
        assert batch["cu_seq_lens_q"].tolist() == starts + [sum(LENGTHS)]
        assert batch["max_length_q"] == max(LENGTHS)
    for sample, (r, start, n) in zip(samples, where):
        assert batch["input_ids"][r, start : start + n].tolist() == sample["input_ids"]
        assert batch["position_ids"][r, start : start + n].tolist() == list(range(n))
        assert batch["labels"][r, start : start + n].tolist() == [IGNORE_INDEX] + sample["labels"][1:]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_per_sample_losses_equal_the_samples_run_alone(models, backend):
    model = models[backend]
    samples = make_samples(LENGTHS)
    batch, where = packed_batch(backend, samples)
    with torch.no_grad():
        logits = packed_logits(model, batch)
        model_loss = model(**batch, use_cache=False).loss
        sums, counts = [], []
        for sample, (r, start, n) in zip(samples, where):
            packed_sum = sample_loss_sum(logits[r, start : start + n], sample["labels"])
            alone_sum = sample_loss_sum(alone(model, sample), sample["labels"])
            count = sum(1 for t in sample["labels"][1:] if t != IGNORE_INDEX)
            torch.testing.assert_close(packed_sum / count, alone_sum / count, atol=TOL, rtol=0)
            sums.append(alone_sum)
            counts.append(count)
    # the model's own loss on the packed batch: every trained token once, none across samples
    torch.testing.assert_close(model_loss, torch.stack(sums).sum() / sum(counts), atol=TOL, rtol=0)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_per_sample_gradients_equal_the_samples_run_alone(models, backend):
    if backend == "flex" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no flex attention backward on CPU; flex gradients are checked on CUDA")
    model = models[backend]
    params = [p for p in model.parameters() if p.requires_grad]
    samples = make_samples(LENGTHS, seed=1)
    batch, where = packed_batch(backend, samples)
    for sample, (r, start, n) in zip(samples, where):
        # a fresh forward per sample: compiled flex attention on CUDA frees its buffers after one backward
        logits = packed_logits(model, batch)
        packed = torch.autograd.grad(sample_loss_sum(logits[r, start : start + n], sample["labels"]), params)
        single = torch.autograd.grad(sample_loss_sum(alone(model, sample), sample["labels"]), params)
        for got, want in zip(packed, single):
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_changing_one_sample_changes_no_other_sample_in_its_bin(models, backend):
    model = models[backend]
    samples = make_samples(LENGTHS, seed=2)
    changed = [dict(s) for s in samples]
    target = 2  # the 9-token sample, packed with the 7-token one
    changed[target] = {**samples[target], "input_ids": [(t + 7) % VOCAB or 1 for t in samples[target]["input_ids"]]}
    batch, where = packed_batch(backend, samples)
    batch_changed, where_changed = packed_batch(backend, changed)
    assert where == where_changed
    with torch.no_grad():
        before, after = packed_logits(model, batch), packed_logits(model, batch_changed)
    row = where[target][0]
    neighbours = [i for i, (r, _, _) in enumerate(where) if r == row and i != target]
    assert neighbours, "the changed sample must share its row with another"
    r, start, n = where[target]
    assert not torch.allclose(before[r, start : start + n], after[r, start : start + n])
    for i, (r, start, n) in enumerate(where):
        if i != target:
            torch.testing.assert_close(after[r, start : start + n], before[r, start : start + n], atol=TOL, rtol=0)


def test_padding_free_batches_of_unpacked_rows_and_padding_to_a_multiple():
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [IGNORE_INDEX, 9]}]
    batch = Collator(pad_token_id=0, pad_to_multiple_of=8, attn_implementation="flash_attention_2")(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]  # the padding is one more sample
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9] + [IGNORE_INDEX] * 3]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 8] and batch["max_length_k"] == 3
    flex = Collator(pad_token_id=0, attn_implementation="flex_attention")(rows)
    assert set(flex) == {"input_ids", "labels", "position_ids"}  # flex finds the samples from the position ids
    assert "attention_mask" in Collator(pad_token_id=0, attn_implementation="sdpa")(rows)
