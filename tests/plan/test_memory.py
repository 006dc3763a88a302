"""The estimator's arithmetic on a hand-computed case (lmforge/plan/memory.py, speed.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lmforge.errors import LmforgeError
from lmforge.plan.counts import Counts, Shape
from lmforge.plan.memory import Setup, estimate, largest_batch, layer_elements
from lmforge.plan.run import parse_size
from lmforge.plan.speed import flops_per_token

SHAPE = Shape(layers=2, hidden=8, q_dim=8, kv_dim=4, heads=2, intermediate=16, vocab=32, model_type="llama")
FULL = Counts(
    total=1000,
    trainable=1000,
    base_linear=800,
    matmul=900,
    largest_layer=300,
    lm_head_trains=True,
    weight_bytes=2,
    trainable_bytes=2,
    shape=SHAPE,
)
STEP = Setup(batch=2, seq=4, stage="sft", method="full", loss_chunk=8)


def test_layer_elements_by_hand():
    # norms 2 x (input, normalised, output) x 8 = 48; q + 2 kv = 16; attention output and its copy 2 x 8 = 16;
    # gate, up, SiLU, product 4 x 16 = 64
    assert layer_elements(SHAPE) == 144
    assert layer_elements(SHAPE, adapters=True) == 144 - 2 * 8  # frozen norms keep no normalised copy
    assert layer_elements(SHAPE, adapters=True, lora_dropout=True) == 128 + 5 * 8 + 8 + 16
    # DoRA: the base and adapter outputs of q, k, v, o, gate, up, down (8 + 4 + 4 + 8 + 16 + 16 + 8)
    assert layer_elements(SHAPE, adapters=True, dora=True) == 128 + 2 * 64


def test_lora_dropout_keeps_inputs_and_one_byte_masks():
    lora = replace(FULL, trainable=50, trainable_bytes=4)
    got = estimate(lora, replace(STEP, method="lora", lora_dropout=True)).terms["activations"]
    # 8 tokens x ((2 layers x (128 + 64 dropped-out inputs) + final norm 2 x 8) x 2 bytes + 2 layers x 64 masks
    # x 1 B + 5 norms' float32 inputs x 8 x 2 B)
    assert got == 8 * ((2 * 192 + 16) * 2 + 2 * 64 + 5 * 8 * 2)


def test_full_bf16_step_by_hand():
    got = estimate(FULL, STEP)
    assert got.terms == {
        "weights": 1000 * 2,
        "reference model": 0,
        "gradients": 1000 * 2,
        "optimizer states": 1000 * 2 * 2,  # AdamW: two states in the parameters' dtype
        # 8 tokens x ((2 layers x 144 + final norm 3 x 8) x 2 bytes + 5 norms' float32 inputs, 2 bytes more)
        "activations": 8 * ((2 * 144 + 24) * 2 + 5 * 8 * 2),
        # grad of the hidden states and the trained rows (2 x 8 x 8 x 2 B), one chunk of fp32 logits and its
        # softmax (2 x 8 x 32 x 4 B), the head's fp32 gradient (32 x 8 x 4 B)
        "loss": 256 + 2048 + 1024,
    }
    assert got.peak == 2000 + 4000 + 5632 + 3328  # static + activations and loss (more than the gradients)


def test_checkpointing_keeps_layer_inputs_and_one_layer():
    got = estimate(FULL, replace(STEP, checkpointing=True))
    # + the float32 inputs of the recomputed layer's 2 norms and the final norm: 3 x 8 x 2 extra bytes
    assert got.terms["activations"] == 8 * ((2 * 8 + 144 + 24) * 2 + 3 * 8 * 2)


def test_sharding_by_strategy():
    zero3 = estimate(FULL, replace(STEP, strategy="zero3", gpus=4)).terms
    assert (zero3["weights"], zero3["gradients"], zero3["optimizer states"]) == (500, 500, 1000)
    assert zero3["gathered layers"] == 2 * 300 * 2  # the layer computed and the next, prefetched
    zero1 = estimate(FULL, replace(STEP, strategy="zero1", gpus=4)).terms
    assert (zero1["weights"], zero1["gradients"], zero1["optimizer states"]) == (2000, 2000, 1000)
    ddp = estimate(FULL, replace(STEP, strategy="ddp", gpus=4)).terms
    assert ddp["gradient buckets"] == ddp["gradients"] == 2000


def test_qlora_weights_and_dpo_reference_copy():
    qlora = replace(FULL, trainable=100, trainable_bytes=4)
    # 800 linear weights at 4.127 bits, the other 100 frozen in bf16, 100 adapter weights in fp32
    assert estimate(qlora, replace(STEP, method="qlora")).terms["weights"] == int(800 * 4.127 / 8) + 200 + 400
    dpo = estimate(FULL, replace(STEP, stage="dpo", reference="copy")).terms
    assert dpo["reference model"] == 2000
    # 2 pairs = 4 rows x 4 tokens: policy logits (bf16) + a float32 copy + float32 row, reference logits + a row
    assert dpo["loss"] == 16 * 32 * (2 + 4 + 4) + 16 * 32 * 2 + 4 * 32 * 4


def test_largest_batch_is_the_last_that_fits():
    peak_at_3 = estimate(FULL, replace(STEP, batch=3)).peak
    assert largest_batch(FULL, STEP, peak_at_3) == 3
    assert largest_batch(FULL, STEP, peak_at_3 - 1) == 2
    assert largest_batch(FULL, STEP, 10) == 0


def test_flops_per_token():
    assert flops_per_token(FULL, STEP) == 6 * 900 + 12 * 2 * 8 * 4
    lora = replace(FULL, trainable=50)
    assert flops_per_token(lora, replace(STEP, method="lora")) == 4 * 900 + 6 * 50 + 12 * 2 * 8 * 4
    assert flops_per_token(FULL, replace(STEP, checkpointing=True)) == 8 * 900 + 12 * 2 * 8 * 4


def test_sizes():
    assert parse_size("80GiB") == parse_size("80GB") == 80 * 2**30
    assert parse_size("40960MiB") == 40 * 2**30
    assert parse_size("1024") == 1024
    with pytest.raises(LmforgeError, match="--gpu-mem"):
        parse_size("eighty")
