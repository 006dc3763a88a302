"""Load the tokenizer and the model a recipe names (a causal LM, or a reward model for stage rm): dtype,
attention implementation, 4-bit quantisation.

Rules a user can rely on:

- `model.dtype: auto` is bf16 on a CUDA GPU that supports bf16, fp32 everywhere else (CPU, older GPUs);
  `resolve_dtype` is the one place that says so.
- `model.attn_implementation: auto` (the default) is lmforge_varlen for packed training, where samples
  share rows and padding-free attention skips the attention between them, and sdpa otherwise. It stays
  sdpa for a model whose attention lmforge_varlen cannot compute (soft-capping, sinks, non-causal).
- `model.attn_implementation` that cannot run here (flash_attention_2 without flash-attn, or a model that
  does not support it) is replaced by sdpa, or eager where the model has no sdpa, with one warning.
  An unknown name is an error, not a fallback.
- `tuning.method: qlora` loads the pretrained weights in 4 bit (bitsandbytes) and prepares them for
  k-bit training. It needs pretrained weights: `init: from_config` with qlora is an error, because
  quantising random weights trains nothing useful.
- A tokenizer with more tokens than the model's embedding rows makes `match_vocab` grow the embeddings
  (`load_model(..., tokenizer=tok)` calls it), with one warning.
- A reward model (`load_reward_model`) is the pretrained model at `model.path` with a new sequence-classification
  head of one output, named REWARD_HEAD. Its reward is the head's output at the last token that is not padding
  (transformers' pooling), which is why the model's config is given the tokenizer's pad token id.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lmforge.config.recipe import ModelSpec, QuantSpec, TuningSpec
from lmforge.data.sources import hub
from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_CONFIG_FILE = "config.json"
QLORA_INSTALL = "pip install 'lmforge[qlora]'"
FALLBACK_ATTENTION = "sdpa"
AUTO_ATTENTION = "auto"
REWARD_HEAD = "score"  # the sequence-classification head's name in transformers' decoder models
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bf16 on a CUDA GPU that supports it and fp32 elsewhere; other names map one to one."""
    if name == "auto":
        bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_gpu else torch.float32
    if name not in DTYPES:
        raise LmforgeError(f"dtype {name!r} is unknown; expected one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


# ---------------------------------------------------------------- tokenizer


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer at `model.tokenizer` (or `model.path`), with a pad token set when it has none."""
    key, where = ("model.tokenizer", spec.tokenizer) if spec.tokenizer else ("model.path", spec.path)
    expected = "a tokenizer directory with tokenizer.json or tokenizer_config.json (set model.tokenizer if elsewhere)"
    options = _check_location(key, where, TOKENIZER_FILES, expected)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=spec.trust_remote_code, **options)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError... for a bad folder or hub id
        raise LmforgeError(
            f"{key}: could not load a tokenizer from {where!r} ({type(err).__name__}: {_first_line(err)}); "
            f"expected a directory with tokenizer.json or tokenizer_config.json, or a hub id"
        ) from err
    _ensure_pad_token(tokenizer, where)
    return tokenizer


def run_template(spec: ModelSpec, stage: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The chat template a run of `stage` uses and saves, resolved once: `model.chat_template`, else the
    tokenizer's own; pretraining without one set keeps the tokenizer's own template if it has one, else none."""
    from lmforge.data.chat.templates import resolve_chat_template

    if stage != "pt" or spec.chat_template:
        return resolve_chat_template(tokenizer, spec.chat_template)
    return tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    if tokenizer.pad_token is not None:
        return
    for role in ("eos_token", "unk_token"):
        token = getattr(tokenizer, role)
        if token is not None:
            tokenizer.pad_token = token
            _warn_once(
                f"tokenizer {where} has no pad token; padding with its {role.split('_')[0]} token {token!r} "
                f"(id {tokenizer.pad_token_id}); padded positions are masked out of attention and loss"
            )
            return
    raise LmforgeError(
        f"tokenizer {where} has no pad, eos or unk token, so batches cannot be padded; "
        f"add a pad_token to its tokenizer_config.json"
    )


# ---------------------------------------------------------------- model


def load_model(
    spec: ModelSpec, tuning: TuningSpec, tokenizer: PreTrainedTokenizerBase | None = None, packed: bool = False
) -> PreTrainedModel:
    """The causal LM as the recipe says; with `tokenizer`, embeddings grow to fit it (see `match_vocab`).

    packed: the model will train on packed rows, which `attn_implementation: auto` serves padding-free.
    """
    dtype = resolve_dtype(spec.dtype)
    attention = resolve_attention(spec.attn_implementation, packed)
    _check_attention_name(attention)
    quant = quantization_config(tuning.quant, dtype) if tuning.method == "qlora" else None
    if spec.init == "pretrained":
        options = _check_location(
            "model.path", spec.path, (MODEL_CONFIG_FILE,), "a model directory with config.json and weights"
        )
        build = _pretrained_builder(spec, dtype, quant, options)
        where = spec.path
    else:
        if quant is not None:
            raise LmforgeError(
                "tuning.method: qlora needs pretrained weights to quantise, but model.init is from_config "
                "(random weights); train with method full first, then run qlora on the saved model"
            )
        config = model_config(spec)
        build = _scratch_builder(spec, config, dtype)
        where = f"a {config.model_type} config"
    try:
        model = _with_attention_fallback(build, attention)
    except LmforgeError:
        raise
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as err:
        hint = f"; for qlora, {QLORA_INSTALL} on a machine bitsandbytes supports" if quant else ""
        raise LmforgeError(
            f"model.path: could not load a causal LM from {where!r} ({type(err).__name__}: {_first_line(err)}); "
            f"expected a directory with config.json and model weights (or a hub id){hint}"
        ) from err
    _check_varlen_fits(model, auto=spec.attn_implementation == AUTO_ATTENTION)
    if quant is not None:
        model = _prepare_kbit(model)
    if tokenizer is not None:
        match_vocab(model, tokenizer)
    return model


def load_reward_model(spec: ModelSpec, tuning: TuningSpec, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model at `model.path` with a new one-output classification head, padding known to its config."""
    if spec.init != "pretrained":
        raise LmforgeError(
            "stage rm: model.init must be pretrained (a reward model starts from a trained model, "
            "usually the SFT one); train with stage pt or sft first"
        )
    dtype = resolve_dtype(spec.dtype)
    extra = {"quantization_config": quantization_config(tuning.quant, dtype)} if tuning.method == "qlora" else {}
    extra |= _check_location("model.path", spec.path, (MODEL_CONFIG_FILE,), "a model directory with config.json")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            spec.path,
            num_labels=1,
            dtype=dtype,
            attn_implementation=resolve_attention(spec.attn_implementation),
            trust_remote_code=spec.trust_remote_code,
            **extra,
        )
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as err:
        raise LmforgeError(
            f"model.path: could not load {spec.path!r} as a sequence-classification model for stage rm "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}); "
            "expected a decoder model directory with config.json and weights"
        ) from err
    model.config.pad_token_id = tokenizer.pad_token_id
    if extra:
        model = _prepare_kbit(model)
    match_vocab(model, tokenizer)
    return model


def resolve_attention(name: str, packed: bool = False) -> str:
    """The attention implementation `model.attn_implementation` asks for; `auto` depends on packing."""
    if name != AUTO_ATTENTION:
        return name
    from lmforge.model import varlen

    return varlen.NAME if packed else FALLBACK_ATTENTION


def match_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Grow the embeddings when the tokenizer has more tokens than the model has rows; True if it did.

    A model with more rows than tokens (vocabularies padded to a round size) is left as it is.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    wanted = len(tokenizer)
    if wanted <= rows:
        return False
    model.resize_token_embeddings(wanted)
    _warn_once(
        f"the tokenizer has {wanted} tokens but the model only {rows} embedding rows; resized the embeddings "
        f"to {wanted}. The new rows start untrained: train them with method full, freeze with modules "
        f"[embed_tokens, lm_head], or lora.modules_to_save: [embed_tokens, lm_head]"
    )
    return True


def quantization_config(quant: QuantSpec, model_dtype: torch.dtype):
    """bitsandbytes 4-bit settings; compute dtype `auto` follows the model's dtype."""
    _require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    compute = model_dtype if quant.compute_dtype == "auto" else resolve_dtype(quant.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def _pretrained_builder(
    spec: ModelSpec, dtype: torch.dtype, quant, options: dict[str, Any]
) -> Callable[[str | None], PreTrainedModel]:
    extra: dict[str, Any] = {"quantization_config": quant, **options} if quant is not None else dict(options)

    def build(attn: str | None) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(
            spec.path, dtype=dtype, attn_implementation=attn, trust_remote_code=spec.trust_remote_code, **extra
        )

    return build


def _scratch_builder(spec: ModelSpec, config, dtype: torch.dtype) -> Callable[[str | None], PreTrainedModel]:
    def build(attn: str | None) -> PreTrainedModel:
        return AutoModelForCausalLM.from_config(
            copy.deepcopy(config), dtype=dtype, attn_implementation=attn, trust_remote_code=spec.trust_remote_code
        )

    return build


def model_config(spec: ModelSpec):
    """The model config a recipe names: `model.config` as a dict with model_type, a config.json path (or its
    folder), or else model.path's config (what from_config builds, and what `lmforge plan` counts)."""
    source = spec.config
    if isinstance(source, dict):
        settings = dict(source)
        model_type = settings.pop("model_type", None)
        if not model_type:
            raise LmforgeError(
                "model.config: a config dict needs `model_type` (e.g. llama, qwen2, mistral) to know which "
                "architecture to build"
            )
        try:
            return AutoConfig.for_model(model_type, **settings)
        except (ValueError, TypeError) as err:
            raise LmforgeError(f"model.config: cannot build a {model_type!r} config ({_first_line(err)})") from err
    key, where = ("model.config", source) if source else ("model.path", spec.path)
    options = {}
    if not Path(where).is_file():
        options = _check_location(key, where, (MODEL_CONFIG_FILE,), "a config.json file or a directory holding one")
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=spec.trust_remote_code, **options)
    except Exception as err:  # OSError for a missing file, ValueError for an unknown model_type, JSON errors
        raise LmforgeError(
            f"{key}: cannot read a model config from {where!r} ({type(err).__name__}: {_first_line(err)}); "
            f"expected a config.json with a model_type"
        ) from err


def _prepare_kbit(model: PreTrainedModel) -> PreTrainedModel:
    from peft import prepare_model_for_kbit_training

    # Activation checkpointing stays with train.activation_checkpointing, not switched on here.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise LmforgeError(
            f"tuning.method: qlora needs bitsandbytes, which is not installed here ({_first_line(err)}); "
            f"run `{QLORA_INSTALL}`, or use method lora"
        ) from err


# ---------------------------------------------------------------- attention


def _check_attention_name(name: str) -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from lmforge.model import varlen  # registers lmforge_varlen

    varlen.register()
    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if "/" in name or name in known:  # "org/repo" names a kernel on the hub
        return
    raise LmforgeError(
        f"model.attn_implementation: {name!r} is unknown; expected one of {', '.join([AUTO_ATTENTION, *known])}"
    )


def _check_varlen_fits(model: PreTrainedModel, auto: bool) -> None:
    """lmforge_varlen on a model whose attention it cannot compute: sdpa (eager where the model has no sdpa)
    under auto, else an error now rather than at the first training step."""
    from lmforge.model import varlen

    if model.config._attn_implementation != varlen.NAME:
        return
    missing = varlen.cannot_compute(model)
    if not missing:
        return
    if not auto:
        raise LmforgeError(
            f"model.attn_implementation: lmforge_varlen cannot compute {missing}, which this "
            f"{model.config.model_type} model uses; use auto, sdpa or eager (packing stays exact with "
            f"a block-diagonal mask)"
        )
    fallback = FALLBACK_ATTENTION if getattr(model, "_supports_sdpa", False) else "eager"
    model.set_attn_implementation(fallback)
    _warn_once(
        f"model.attn_implementation: auto uses {fallback} with a block-diagonal mask for packing here, not "
        f"lmforge_varlen, which cannot compute {missing}"
    )


def _with_attention_fallback(build: Callable[[str | None], PreTrainedModel], requested: str) -> PreTrainedModel:
    """Build with the requested attention; if it cannot run here, rebuild with transformers' default.

    transformers checks the implementation when the model object is created, before weights load, so
    the failed first try costs little. Its default is sdpa, or eager for a model without sdpa.
    """
    try:
        return build(requested)
    except (ValueError, ImportError) as err:
        if requested == "eager" or "attention" not in str(err).lower():
            raise
        reason = _first_line(err)
    model = build(None)
    used = model.config._attn_implementation
    _warn_once(f"model.attn_implementation: {requested!r} cannot run here ({reason}); using {used!r} instead")
    return model


# ---------------------------------------------------------------- helpers


def _check_location(key: str, where: str, files: tuple[str, ...], expected: str) -> dict[str, Any]:
    """A local directory must hold one of `files`; anything else must look like a hub id (org/name), and the Hub
    answer or the id be in the local cache (data/sources/hub.py). Returns what from_pretrained needs to load it."""
    path = Path(where).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in files):
            raise LmforgeError(f"{key}: {where} has none of {', '.join(files)}; expected {expected}")
        return {}
    if path.exists():
        raise LmforgeError(f"{key}: {where} is a file; expected {expected}")
    looks_local = where.startswith((".", "/", "~")) or "\\" in where or where.count("/") > 1
    if looks_local:
        raise LmforgeError(
            f"{key}: {where!r} does not exist (looked for {path.absolute()}: relative paths in a recipe are read "
            f"from the current directory); expected {expected}"
        )
    if not _HUB_ID.match(where) or ".." in where or "--" in where:
        raise LmforgeError(
            f"{key}: {where!r} is not an existing directory nor a hub id like 'org/name'; expected {expected}"
        )
    return hub.load_options(key, where, files)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@cache
def _warn_once(message: str) -> None:
    logger.warning(message)
