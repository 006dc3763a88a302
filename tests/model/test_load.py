"""lmforge.model.load: tokenizer and model loading, dtype, attention fallback, 4-bit loading, errors."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lmforge.config.recipe import ModelSpec, TuningSpec
from lmforge.errors import LmforgeError
from lmforge.model import load
from lmforge.model.load import load_model, load_tokenizer, match_vocab, resolve_dtype

VOCAB = 300
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
)


def save_tokenizer(out, words: int = 20, eos: str | None = "</s>", unk: str | None = "<unk>") -> str:
    vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i + 2 for i in range(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, unk_token=unk).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(out)
    save_tokenizer(out)
    return str(out)


def spec(path: str, **kw) -> ModelSpec:
    return ModelSpec(path=path, **kw)


FULL = TuningSpec(method="full")


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_without_pad_pads_with_eos_and_says_so(tmp_path, caplog):
    where = save_tokenizer(tmp_path / "tok")
    with caplog.at_level(logging.WARNING, logger="lmforge.model.load"):
        tok = load_tokenizer(spec(where))
        load_tokenizer(spec(where))
    assert tok.pad_token == "</s>" and tok.pad_token_id == tok.eos_token_id
    assert len([r for r in caplog.records if "no pad token" in r.message]) == 1


def test_tokenizer_without_eos_pads_with_unk(tmp_path):
    tok = load_tokenizer(spec(save_tokenizer(tmp_path / "tok", eos=None)))
    assert tok.pad_token == "<unk>"


def test_model_tokenizer_key_wins_over_path(tmp_path, tiny_dir):
    other = save_tokenizer(tmp_path / "tok", words=50)
    assert len(load_tokenizer(spec(tiny_dir, tokenizer=other))) == 52


def test_real_tokenizers_load_with_a_pad_token(shared_tokenizer_dir):
    tok = load_tokenizer(spec(str(shared_tokenizer_dir)))
    assert tok.pad_token is not None and tok.pad_token_id is not None


@pytest.mark.parametrize("bad", ["./no/such/dir", "/no/such/dir", "not a hub id", "a/b/c", "org/../x"])
def test_tokenizer_bad_path_is_a_clear_error(bad):
    with pytest.raises(LmforgeError, match="model.path: .*expected a tokenizer directory"):
        load_tokenizer(spec(bad))


def test_tokenizer_dir_without_tokenizer_files(tmp_path):
    with pytest.raises(LmforgeError, match=r"has none of tokenizer.json, tokenizer_config.json"):
        load_tokenizer(spec(str(tmp_path)))


def test_tokenizer_broken_files_name_the_path(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(LmforgeError, match=str(tmp_path)):
        load_tokenizer(spec(str(tmp_path)))


# ---------------------------------------------------------------- model


def test_pretrained_loads_the_saved_weights(tiny_dir):
    model = load_model(spec(tiny_dir), FULL)
    reference = LlamaForCausalLM.from_pretrained(tiny_dir)
    assert isinstance(model, LlamaForCausalLM)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_dtype_names(tiny_dir, name, dtype):
    model = load_model(spec(tiny_dir, dtype=name), FULL)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_dtype_auto_is_bf16_on_a_bf16_gpu_else_fp32(tiny_dir):
    bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_dtype("auto") == (torch.bfloat16 if bf16_gpu else torch.float32)
    model = load_model(spec(tiny_dir), FULL)
    assert next(model.parameters()).dtype == resolve_dtype("auto")


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_implementation_is_honoured(tiny_dir, impl):
    assert load_model(spec(tiny_dir, attn_implementation=impl), FULL).config._attn_implementation == impl


def test_unavailable_flash_attention_falls_back_to_sdpa_with_one_warning(tiny_dir, caplog):
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available() and torch.cuda.is_available():
        pytest.skip("flash-attn can run here, so there is nothing to fall back from")
    with caplog.at_level(logging.WARNING, logger="lmforge.model.load"):
        model = load_model(spec(tiny_dir, attn_implementation="flash_attention_2"), FULL)
        load_model(spec(tiny_dir, attn_implementation="flash_attention_2"), FULL)
    assert model.config._attn_implementation == "sdpa"
    warnings = [r.message for r in caplog.records if "attn_implementation" in r.message]
    assert len(warnings) == 1 and "'flash_attention_2' cannot run here" in warnings[0]


def test_unknown_attention_name_is_an_error(tiny_dir):
    with pytest.raises(LmforgeError, match="'flash_attn2' is unknown; expected one of auto, eager, .*sdpa"):
        load_model(spec(tiny_dir, attn_implementation="flash_attn2"), FULL)


def test_auto_attention_is_padding_free_for_packed_training_and_sdpa_otherwise(tiny_dir):
    assert ModelSpec(path=tiny_dir).attn_implementation == "auto"
    assert load_model(spec(tiny_dir), FULL, packed=True).config._attn_implementation == "lmforge_varlen"
    assert load_model(spec(tiny_dir), FULL).config._attn_implementation == "sdpa"
    assert (
        load_model(spec(tiny_dir, attn_implementation="eager"), FULL, packed=True).config._attn_implementation
        == "eager"
    )


@pytest.fixture(scope="module")
def softcapped_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny_gemma2")
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        attn_logit_softcapping=50.0,
    )
    Gemma2ForCausalLM(config).save_pretrained(out)
    return str(out)


def test_auto_keeps_the_mask_where_lmforge_varlen_cannot_compute_the_attention(softcapped_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="lmforge.model.load"):
        model = load_model(spec(softcapped_dir), FULL, packed=True)
    assert model.config._attn_implementation == "eager"  # Gemma 2 has no sdpa: soft-capping needs eager
    assert any("soft-capping" in r.message for r in caplog.records)
    with pytest.raises(LmforgeError, match="lmforge_varlen cannot compute attention logit soft-capping.*gemma2"):
        load_model(spec(softcapped_dir, attn_implementation="lmforge_varlen"), FULL, packed=True)


def test_from_config_dict(tiny_dir):
    config = {"model_type": "llama", **TINY, "num_hidden_layers": 2}
    model = load_model(spec(tiny_dir, init="from_config", config=config), FULL)
    assert isinstance(model, LlamaForCausalLM) and len(model.model.layers) == 2
    assert model.config.hidden_size == 64


def test_from_config_json_path_and_default(tmp_path, tiny_dir):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model_type": "llama", **TINY, "num_hidden_layers": 3}))
    by_file = load_model(spec(tiny_dir, init="from_config", config=str(config_file)), FULL)
    assert len(by_file.model.layers) == 3
    by_default = load_model(spec(tiny_dir, init="from_config"), FULL)
    assert len(by_default.model.layers) == 4
    saved = LlamaForCausalLM.from_pretrained(tiny_dir)
    assert not torch.equal(by_default.model.embed_tokens.weight, saved.model.embed_tokens.weight)  # fresh init


def test_from_config_dict_needs_model_type(tiny_dir):
    with pytest.raises(LmforgeError, match="needs `model_type`"):
        load_model(spec(tiny_dir, init="from_config", config={"hidden_size": 64}), FULL)


def test_from_config_missing_file(tmp_path):
    with pytest.raises(LmforgeError, match="model.config: .*does not exist \\(looked for"):
        load_model(spec(str(tmp_path), init="from_config", config=str(tmp_path / "nope" / "config.json")), FULL)


@pytest.mark.parametrize("bad", ["/no/such/model", "./missing", "bad id with spaces"])
def test_model_bad_path_is_a_clear_error(bad):
    with pytest.raises(LmforgeError, match="model.path: .*expected a model directory"):
        load_model(spec(bad), FULL)


def test_model_dir_without_weights_names_the_path(tmp_path):
    LlamaConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(LmforgeError, match=f"could not load a causal LM from '{tmp_path}'"):
        load_model(spec(str(tmp_path)), FULL)


def test_match_vocab_grows_embeddings_only_when_needed(tmp_path, tiny_dir, caplog):
    model = load_model(spec(tiny_dir), FULL)
    small = load_tokenizer(spec(tiny_dir))
    assert not match_vocab(model, small)
    big = load_tokenizer(spec(save_tokenizer(tmp_path / "big", words=VOCAB + 10)))
    with caplog.at_level(logging.WARNING, logger="lmforge.model.load"):
        model = load_model(spec(tiny_dir), FULL, tokenizer=big)
    assert model.get_input_embeddings().weight.shape[0] == len(big) == VOCAB + 12
    assert model.get_output_embeddings().weight.shape[0] == len(big)
    assert any("resized the embeddings" in r.message for r in caplog.records)


# ---------------------------------------------------------------- qlora


def bitsandbytes_runs() -> str | None:
    """None when a 4-bit layer runs forward here, else why not."""
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(8, 8, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to("cuda" if torch.cuda.is_available() else "cpu")
        layer(torch.ones(1, 8, device=layer.weight.device))
    except Exception as err:  # any failure means: cannot run here
        return f"bitsandbytes cannot run a 4-bit layer here: {type(err).__name__}: {err}"
    return None


needs_bnb = pytest.mark.skipif(bitsandbytes_runs() is not None, reason=str(bitsandbytes_runs()))


@needs_bnb
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_qlora_loads_linear_layers_in_4bit(tiny_dir, quant_type):
    import bitsandbytes as bnb

    tuning = TuningSpec(method="qlora", quant={"quant_type": quant_type})
    model = load_model(spec(tiny_dir), tuning)
    assert model.is_loaded_in_4bit
    linears = [m for n, m in model.named_modules() if n.startswith("model.layers") and isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 7 and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert linears[0].weight.quant_state.quant_type == quant_type
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert not any(p.requires_grad for p in model.parameters())  # prepared for k-bit training: base frozen


def test_qlora_from_config_is_an_error(tiny_dir):
    with pytest.raises(LmforgeError, match="qlora needs pretrained weights"):
        load_model(spec(tiny_dir, init="from_config"), TuningSpec(method="qlora"))


def test_qlora_without_bitsandbytes_says_what_to_install(tiny_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(LmforgeError, match=r"pip install 'lmforge\[qlora\]'"):
        load_model(spec(tiny_dir), TuningSpec(method="qlora"))


def test_check_location_accepts_hub_ids(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reachability check of the Hub (tests/data/sources/test_hub.py)
    for hub_id in ("Qwen/Qwen3-0.6B", "gpt2", "meta-llama/Llama-3.1-8B-Instruct"):
        load._check_location("model.path", hub_id, ("config.json",), "x")
