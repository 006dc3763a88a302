"""lmforge.model.adapters: exactly the intended parameters train under each tuning method."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.config.recipe import ModelSpec, TuningSpec
from lmforge.errors import LmforgeError
from lmforge.model.adapters import SEQ_CLS, apply_tuning, decoder_layers, describe_trainable, parameter_counts
from lmforge.model.load import load_model

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny_llama")
    tiny().save_pretrained(out)
    return str(out)


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def lora_names(prefix: str, projections=PROJECTIONS, layers=range(4), extra=("lora_A", "lora_B")) -> set[str]:
    return {
        f"{prefix}model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}.{part}.default.weight"
        for i in layers
        for p in projections
        for part in extra
    }


def tuning(method: str, **section) -> TuningSpec:
    return TuningSpec(method=method, **section)


# ---------------------------------------------------------------- full and freeze


def test_full_trains_everything():
    model = tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    model = apply_tuning(model, tuning("full"))
    assert trainable(model) == {name for name, _ in model.named_parameters()}
    assert parameter_counts(model)[0] == parameter_counts(model)[1]


def test_freeze_trains_last_layers_and_named_modules_only():
    model = apply_tuning(tiny(), tuning("freeze", freeze={"layers": 2, "modules": ["lm_head", "norm"]}))
    expected = {n for n, _ in model.named_parameters() if n.startswith(("model.layers.2.", "model.layers.3."))}
    assert trainable(model) == expected | {"lm_head.weight", "model.norm.weight"}


def test_freeze_finds_gpt2_style_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=2, vocab_size=100, n_positions=32))
    assert decoder_layers(model) is model.transformer.h
    apply_tuning(model, tuning("freeze", freeze={"layers": 1}))
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith("transformer.h.2.")}


def test_freeze_with_tied_embeddings_trains_the_shared_weight(caplog):
    model = tiny(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with caplog.at_level(logging.WARNING, logger="lmforge.model.adapters"):
        apply_tuning(model, tuning("freeze", freeze={"layers": 0, "modules": ["lm_head"]}))
    assert model.model.embed_tokens.weight.requires_grad  # one tensor: training lm_head trains the embeddings
    assert trainable(model) == {"model.embed_tokens.weight"}  # named once, shared
    assert any("tied embeddings" in r.message for r in caplog.records)


def test_freeze_module_matching_nothing_lists_names():
    with pytest.raises(
        LmforgeError,
        match=r"tuning.freeze.modules: 'lmhead' matches no module of LlamaForCausalLM; did you mean lm_head\? ",
    ):
        apply_tuning(tiny(), tuning("freeze", freeze={"modules": ["lmhead"]}))


def test_freeze_more_layers_than_the_model_has():
    with pytest.raises(LmforgeError, match="freeze.layers: 9, but the model has 4 decoder layers"):
        apply_tuning(tiny(), tuning("freeze", freeze={"layers": 9}))


def test_freeze_with_nothing_to_train():
    with pytest.raises(LmforgeError, match="nothing would train"):
        apply_tuning(tiny(), tuning("freeze", freeze={"layers": 0}))


def test_freeze_without_a_layer_list_is_a_clear_error():
    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.ModuleList([torch.nn.Linear(2, 2)]), torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(LmforgeError, match="cannot tell which ModuleList holds the decoder layers of Flat"):
        apply_tuning(Flat(), tuning("freeze"))


# ---------------------------------------------------------------- lora and dora


def test_lora_all_linear_trains_adapters_only():
    model = apply_tuning(tiny(), tuning("lora", lora={"r": 4}))
    assert trainable(model) == lora_names("base_model.model.")


def test_lora_target_list_and_modules_to_save():
    model = apply_tuning(tiny(), tuning("lora", lora={"target": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}))
    expected = lora_names("base_model.model.", projections=("q_proj", "v_proj"))
    assert trainable(model) == expected | {"base_model.model.lm_head.modules_to_save.default.weight"}


def test_lora_single_name_target_is_a_one_item_list():
    model = apply_tuning(tiny(), tuning("lora", lora={"target": "o_proj"}))
    assert trainable(model) == lora_names("base_model.model.", projections=("o_proj",))


def test_lora_modules_to_save_keeps_tied_embeddings_tied():
    model = apply_tuning(tiny(tie_word_embeddings=True), tuning("lora", lora={"modules_to_save": ["lm_head"]}))
    base = model.base_model.model
    assert base.lm_head.modules_to_save.default.weight is base.model.embed_tokens.modules_to_save.default.weight
    assert base.lm_head.modules_to_save.default.weight.requires_grad


def test_dora_adds_magnitude_vectors():
    model = apply_tuning(tiny(), tuning("dora", lora={"r": 4}))
    magnitude = {
        n.replace("lora_A.default.weight", "lora_magnitude_vector.default.weight")
        for n in lora_names("base_model.model.", extra=("lora_A",))
    }
    assert trainable(model) == lora_names("base_model.model.") | magnitude


@pytest.mark.parametrize(
    "section,key",
    [
        ({"target": ["q_proj", "qkv_proj"]}, "tuning.lora.target: 'qkv_proj'"),
        ({"modules_to_save": ["head"]}, "tuning.lora.modules_to_save: 'head'"),
    ],
)
def test_lora_names_matching_nothing_are_errors(section, key):
    with pytest.raises(
        LmforgeError, match=f"{key} matches no module of LlamaForCausalLM; .*names here include .*q_proj"
    ):
        apply_tuning(tiny(), tuning("lora", lora=section))


def test_lora_target_peft_cannot_adapt():
    with pytest.raises(LmforgeError, match="peft cannot adapt this model as asked"):
        apply_tuning(tiny(), tuning("lora", lora={"target": ["self_attn"]}))


def test_applying_twice_is_an_error():
    model = apply_tuning(tiny(), tuning("lora"))
    with pytest.raises(LmforgeError, match="already carries a peft adapter"):
        apply_tuning(model, tuning("lora"))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_saved_adapter_reloads_with_the_same_logits(tmp_path, tiny_dir, method):
    from peft import PeftModel

    model = apply_tuning(LlamaForCausalLM.from_pretrained(tiny_dir), tuning(method, lora={"r": 4}))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change the output
                p.normal_(0, 0.5)
    model.eval()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        plain = LlamaForCausalLM.from_pretrained(tiny_dir).eval()(input_ids=ids).logits
    assert not torch.allclose(before, plain, atol=1e-3)
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_dir), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, before)


# ---------------------------------------------------------------- a new head (reward models)


def tiny_classifier(seed: int = 0):
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(LlamaConfig(**TINY, num_labels=1, pad_token_id=0))


HEAD_SAVED = {"base_model.model.score.modules_to_save.default.weight"}


@pytest.mark.parametrize("target", ["all-linear", ["q_proj", "v_proj"]])
def test_lora_on_a_classifier_adapts_the_body_and_trains_the_head_whole(target):
    from peft import PeftModelForSequenceClassification

    model = apply_tuning(
        tiny_classifier(), tuning("lora", lora={"r": 4, "target": target}), task_type=SEQ_CLS, head="score"
    )
    assert isinstance(model, PeftModelForSequenceClassification)
    projections = PROJECTIONS if target == "all-linear" else tuple(target)
    assert trainable(model) == lora_names("base_model.model.", projections=projections) | HEAD_SAVED
    assert not any("score.lora_" in name for name, _ in model.named_parameters())  # the head is no target


def test_dora_on_a_classifier_keeps_the_head_whole_and_reloads(tmp_path):
    from peft import PeftModel
    from transformers import LlamaForSequenceClassification

    base_dir = tmp_path / "base"
    tiny_classifier().save_pretrained(base_dir)
    model = apply_tuning(
        LlamaForSequenceClassification.from_pretrained(base_dir),
        tuning("dora", lora={"r": 4}),
        task_type=SEQ_CLS,
        head="score",
    )
    assert HEAD_SAVED <= trainable(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(0, 0.5)
    model.eval()
    ids = torch.randint(1, 300, (2, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(LlamaForSequenceClassification.from_pretrained(base_dir), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=ids).logits, before)


def test_freeze_on_a_classifier_trains_the_head_with_the_last_layers():
    model = apply_tuning(tiny_classifier(), tuning("freeze", freeze={"layers": 1}), task_type=SEQ_CLS, head="score")
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(("model.layers.3.", "score."))}


def test_the_head_cannot_be_a_lora_target():
    with pytest.raises(LmforgeError, match="'score' is the new head, which trains whole; leave it out"):
        apply_tuning(
            tiny_classifier(), tuning("lora", lora={"target": ["q_proj", "score"]}), task_type=SEQ_CLS, head="score"
        )


# ---------------------------------------------------------------- qlora


def bitsandbytes_runs() -> str | None:
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(8, 8, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to("cuda" if torch.cuda.is_available() else "cpu")
        layer(torch.ones(1, 8, device=layer.weight.device))
    except Exception as err:  # any failure means: cannot run here
        return f"bitsandbytes cannot run a 4-bit layer here: {type(err).__name__}: {err}"
    return None


@pytest.mark.skipif(bitsandbytes_runs() is not None, reason=str(bitsandbytes_runs()))
def test_qlora_trains_only_lora_on_4bit_layers(tiny_dir):
    import bitsandbytes as bnb

    method = tuning("qlora", lora={"r": 4})
    model = apply_tuning(load_model(ModelSpec(path=tiny_dir, dtype="fp32"), method), method)
    base = model.base_model.model
    assert isinstance(base.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    assert trainable(model) == lora_names("base_model.model.")

    ids = torch.randint(0, 300, (2, 12), device=base.lm_head.weight.device)
    model(input_ids=ids, labels=ids).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == lora_names("base_model.model.")

    lora_total = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert parameter_counts(model) == (lora_total, parameter_counts(tiny())[1] + lora_total)  # 4-bit at full size


def test_qlora_needs_a_4bit_model():
    with pytest.raises(LmforgeError, match="qlora needs the base model loaded in 4 bit"):
        apply_tuning(tiny(), tuning("qlora"))


# ---------------------------------------------------------------- counts


def test_parameter_counts_count_tied_weights_once_and_describe():
    model = tiny(tie_word_embeddings=True)
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(p.numel() for n, p in model.named_parameters())  # shared tensor listed once
    model = apply_tuning(model, tuning("freeze", freeze={"layers": 1}))
    count, all_ = parameter_counts(model)
    assert all_ == total and count == sum(p.numel() for p in model.model.layers[3].parameters())
    assert describe_trainable(model) == f"trainable params: {count:,} ({100 * count / total:.2f}%) of {total:,}"
