"""Chunked cross-entropy equals the standard causal-LM loss and its gradients (fp32, 1e-5), alone and in the trainer."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    TrainingArguments,
)
from transformers.loss.loss_utils import ForCausalLMLoss

from lmforge.config.recipe import LoraSpec, TrainSpec, TuningSpec
from lmforge.errors import LmforgeError
from lmforge.model.adapters import apply_tuning
from lmforge.train.collate import IGNORE_INDEX, Collator
from lmforge.train.losses import HeadTransform, auto_chunk_size, chunked_causal_lm_loss, head_transform
from lmforge.train.trainer import LmforgeTrainer, resolve_loss_chunk

TOL = 1e-5
SHAPE = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _standard(hidden, weight, labels, bias=None, num_items_in_batch=None, transform=None):
    transform = transform or HeadTransform()
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    logits = logits * transform.scale
    if transform.softcap is not None:
        logits = torch.tanh(logits / transform.softcap) * transform.softcap
    return ForCausalLMLoss(logits, labels, weight.shape[0], num_items_in_batch=num_items_in_batch)


def _labels(batch, length, vocab, seed=0):
    labels = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    labels[0, :6] = IGNORE_INDEX  # a prompt
    labels[-1, length // 2 :] = IGNORE_INDEX  # padding
    return labels


def _assert_close(a, b):
    assert torch.allclose(a, b, atol=TOL, rtol=TOL), (a - b).abs().max().item()


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("num_items", [None, 41, "tensor"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(
    "transform",
    [HeadTransform(), HeadTransform(softcap=2.5), HeadTransform(scale=0.25)],
    ids=["plain", "cap", "scale"],
)
def test_loss_and_gradients_equal_the_standard_loss(chunk, num_items, with_bias, transform):
    torch.manual_seed(0)
    hidden = torch.randn(3, 19, 16, requires_grad=True)
    weight = torch.randn(101, 16, requires_grad=True)
    bias = torch.randn(101, requires_grad=True) if with_bias else None
    labels = _labels(3, 19, 101)
    if num_items == "tensor":
        num_items = torch.tensor(53)
    params = [hidden, weight] + ([bias] if with_bias else [])

    expected = _standard(hidden, weight, labels, bias, num_items, transform)
    expected_grads = torch.autograd.grad(expected, params)
    got = chunked_causal_lm_loss(
        hidden, weight, labels, bias=bias, chunk_size=chunk, num_items_in_batch=num_items, transform=transform
    )
    got_grads = torch.autograd.grad(got, params)

    _assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        _assert_close(g, e)


def test_frozen_output_layer_gets_no_gradient_and_hidden_states_do():
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = _labels(2, 9, 50)
    got = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=4)
    got.backward()
    expected_grad = torch.autograd.grad(_standard(hidden, weight, labels), hidden)[0]
    _assert_close(hidden.grad, expected_grad)
    assert weight.grad is None


def test_gradient_is_scaled_by_the_upstream_gradient():
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = _labels(2, 9, 50)
    (3.0 * chunked_causal_lm_loss(hidden, weight, labels, chunk_size=4)).backward()
    expected = torch.autograd.grad(3.0 * _standard(hidden, weight, labels), [hidden, weight])
    _assert_close(hidden.grad, expected[0])
    _assert_close(weight.grad, expected[1])


def test_no_trained_token_gives_nan_like_the_standard_loss_and_zero_with_num_items():
    hidden = torch.randn(1, 5, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = torch.full((1, 5), IGNORE_INDEX)
    assert torch.isnan(chunked_causal_lm_loss(hidden, weight, labels))
    assert torch.isnan(_standard(hidden, weight, labels))
    assert chunked_causal_lm_loss(hidden, weight, labels, num_items_in_batch=4).item() == 0.0


def test_label_outside_the_vocabulary_is_an_error():
    labels = torch.tensor([[1, 2, 60]])
    with pytest.raises(LmforgeError, match="outside the output layer's vocabulary of 50"):
        chunked_causal_lm_loss(torch.randn(1, 3, 16), torch.randn(50, 16), labels)


def test_auto_chunk_holds_a_bounded_number_of_logits():
    assert auto_chunk_size(151_936) * 151_936 <= 2**26
    assert auto_chunk_size(151_936) % 64 == 0
    assert auto_chunk_size(10**9) == 64


# ---- the trainer path ----------------------------------------------------------------------------------------


def _llama(vocab=97, tie=False, attn="sdpa"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, tie_word_embeddings=tie, attn_implementation=attn, **SHAPE)
    return LlamaForCausalLM(config)


def _trainer(model, tmp_path, loss_chunk):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True)
    return LmforgeTrainer(model=model, args=args, loss_chunk=loss_chunk)


def _examples(vocab, lengths=(11, 7, 9)):
    """Rows of different lengths with a masked prompt at the start of each."""
    gen = torch.Generator().manual_seed(1)
    examples = []
    for length in lengths:
        ids = torch.randint(3, vocab, (length,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return examples


def _batch(vocab, lengths=(11, 7, 9)):
    return Collator(pad_token_id=0)(_examples(vocab, lengths))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _trainer_loss_and_grads(model, tmp_path, loss_chunk, batch, num_items=None):
    trainer = _trainer(model, tmp_path, loss_chunk)
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), _grads(model)


def _model_loss_and_grads(model, batch, num_items=None):
    model.zero_grad(set_to_none=True)
    extra = {"num_items_in_batch": num_items} if num_items is not None else {}
    loss = model(**batch, **extra).loss
    loss.backward()
    return loss.detach(), _grads(model)


def _assert_same(got, expected):
    _assert_close(got[0], expected[0])
    assert got[1].keys() == expected[1].keys() and got[1]
    for name in expected[1]:
        assert torch.allclose(got[1][name], expected[1][name], atol=TOL, rtol=TOL), name


@pytest.mark.parametrize("num_items", [None, 40])
@pytest.mark.parametrize("tie", [False, True])
def test_trainer_loss_equals_model_loss_full_tuning(tmp_path, num_items, tie):
    model = _llama(tie=tie)
    batch = _batch(97)
    expected = _model_loss_and_grads(model, batch, num_items)
    got = _trainer_loss_and_grads(model, tmp_path, 5, batch, num_items)
    _assert_same(got, expected)


@pytest.mark.parametrize("modules_to_save", [[], ["lm_head"]])
def test_trainer_loss_equals_model_loss_with_lora(tmp_path, modules_to_save):
    lora = LoraSpec(r=4, dropout=0.0, modules_to_save=modules_to_save)
    model = apply_tuning(_llama(), TuningSpec(method="lora", lora=lora))
    for name, param in model.named_parameters():  # LoRA B starts at zero: move it so its gradients are not trivial
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    batch = _batch(97)
    expected = _model_loss_and_grads(model, batch)
    got = _trainer_loss_and_grads(model, tmp_path, 4, batch)
    _assert_same(got, expected)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_with_block_mask_equals_the_unchunked_trainer(tmp_path, attn):
    model = _llama(attn=attn)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 97, (2, 14), generator=gen).tolist()
    rows = [
        {"input_ids": ids[0], "labels": ids[0], "position_ids": list(range(6)) + list(range(8))},
        {"input_ids": ids[1][:10], "labels": [IGNORE_INDEX] * 2 + ids[1][2:10], "position_ids": list(range(10))},
    ]
    batch = Collator(pad_token_id=0)(rows)
    assert batch["attention_mask"].dim() == 4
    expected = _trainer_loss_and_grads(model, tmp_path, "off", batch)
    got = _trainer_loss_and_grads(model, tmp_path, 3, batch)
    _assert_same(got, expected)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Gemma2ForCausalLM(Gemma2Config(vocab_size=97, head_dim=4, final_logit_softcapping=3.0, **SHAPE)),
        lambda: CohereForCausalLM(CohereConfig(vocab_size=97, logit_scale=0.3, **SHAPE)),
        lambda: GraniteForCausalLM(GraniteConfig(vocab_size=97, logits_scaling=4.0, **SHAPE)),
    ],
    ids=["gemma2-softcap", "cohere-scale", "granite-scaling"],
)
def test_models_that_transform_their_logits(tmp_path, build):
    torch.manual_seed(0)
    model = build()
    assert head_transform(model.config) != HeadTransform()
    batch = _batch(97)
    batch["attention_mask"] = batch["attention_mask"].bool()
    expected = _model_loss_and_grads(model, batch)
    got = _trainer_loss_and_grads(model, tmp_path, 6, batch)
    _assert_same(got, expected)


def test_eval_path_returns_the_loss(tmp_path):
    model = _llama().eval()
    trainer = _trainer(model, tmp_path, 4)
    batch = _batch(97)
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        expected = model(**batch).loss
    _assert_close(loss, expected)
    assert outputs.loss is loss


def test_auto_chunks_every_vocabulary_and_off_turns_it_off(tmp_path):
    assert resolve_loss_chunk(_llama(vocab=97), "auto") == auto_chunk_size(97)
    assert resolve_loss_chunk(_llama(vocab=32768), "auto") == auto_chunk_size(32768)
    assert resolve_loss_chunk(_llama(vocab=97), 128) == 128
    assert resolve_loss_chunk(_llama(vocab=32768), "off") is None
    scorer = LlamaForSequenceClassification(LlamaConfig(vocab_size=32768, num_labels=1, **SHAPE))
    assert resolve_loss_chunk(scorer, "auto") is None  # no output layer over the vocabulary: nothing to chunk
    with pytest.raises(LmforgeError, match="has no output layer"):
        resolve_loss_chunk(scorer, 64)


def test_lora_on_the_output_layer_falls_back_on_auto_and_fails_when_asked(capsys):
    tuning = TuningSpec(method="lora", lora=LoraSpec(r=4, target=["q_proj", "lm_head"]))
    model = apply_tuning(_llama(vocab=32768), tuning)
    assert resolve_loss_chunk(model, "auto") is None
    assert "not a plain Linear layer" in capsys.readouterr().err
    with pytest.raises(LmforgeError, match="train.loss_chunk: 256 cannot be used"):
        resolve_loss_chunk(model, 256)


def test_recipe_keys():
    spec = TrainSpec()
    assert spec.loss_chunk == "auto" and spec.compile is False
    assert TrainSpec(loss_chunk=2048).loss_chunk == 2048
    assert TrainSpec(loss_chunk=False).loss_chunk == "off"  # YAML's bare `off`
    assert TrainSpec(loss_chunk=True).loss_chunk == "auto"
    with pytest.raises(ValueError, match="loss_chunk"):
        TrainSpec(loss_chunk=0)
    with pytest.raises(ValueError):
        TrainSpec(loss_chunk="sometimes")


def test_training_with_gradient_accumulation_matches_the_model_loss(tmp_path):
    """Two optimizer steps of two accumulated batches each: same weights and eval loss with and without chunks."""
    data = _examples(97, lengths=[5 + 3 * i for i in range(8)])
    results = []
    for loss_chunk in ("off", 5):
        model = _llama()
        args = TrainingArguments(
            output_dir=str(tmp_path / str(loss_chunk)),
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-2,
            lr_scheduler_type="constant",
            save_strategy="no",
            logging_steps=1,
            seed=0,
            data_seed=0,
        )
        trainer = LmforgeTrainer(
            model=model,
            args=args,
            train_dataset=data,
            eval_dataset=data,
            data_collator=Collator(0),
            loss_chunk=loss_chunk,
        )
        trainer.train()
        results.append((dict(model.named_parameters()), trainer.evaluate()["eval_loss"]))
    (plain, plain_eval), (chunked, chunked_eval) = results
    assert abs(plain_eval - chunked_eval) < TOL
    for name in plain:
        assert torch.allclose(plain[name], chunked[name], atol=TOL), name


def test_a_sharded_output_layer_falls_back_on_auto_and_fails_when_asked(capsys):
    """Under FSDP2 or ZeRO-3 the output layer's weight is a shard outside the forward: auto says so in one line
    and uses the model's own loss; a chunk size asked for is refused, naming the engine."""
    model = _llama(vocab=97)
    assert resolve_loss_chunk(model, "auto", sharding="FSDP") is None
    lines = [line for line in capsys.readouterr().err.splitlines() if "loss_chunk" in line]
    assert lines == [
        "lmforge: train.loss_chunk auto: using the model's own loss because FSDP shards the output layer's "
        "weight, which the chunked loss reads outside the forward"
    ]
    with pytest.raises(LmforgeError, match="DeepSpeed ZeRO-3 shards the output layer's weight"):
        resolve_loss_chunk(model, 64, sharding="DeepSpeed ZeRO-3")


def test_a_dtensor_output_weight_is_seen_as_sharded(tmp_path):
    """FSDP2 turns parameters into DTensors; the chunked loss is not used on one (a one-process gloo mesh here)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from lmforge.train.trainer import sharded_weight

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = _llama(vocab=97)
        head = model.get_output_embeddings()
        assert not sharded_weight(head.weight)
        mesh = init_device_mesh("cpu", (1,))
        head.weight = torch.nn.Parameter(distribute_tensor(head.weight.detach(), mesh, [Shard(0)]))
        assert sharded_weight(head.weight)
        with pytest.raises(LmforgeError, match="output layer's weight is sharded"):
            resolve_loss_chunk(model, 64)
    finally:
        if started:
            dist.destroy_process_group()
