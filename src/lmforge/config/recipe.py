"""The recipe: one validated YAML document that says what to train, on what, and how.

Every section forbids unknown keys so a typo fails loudly (see `load.py` for the
did-you-mean messages). Rare engine options go through `train.extra`, passed as
they are to `transformers.TrainingArguments`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stage = Literal["pt", "sft"]
TuningMethod = Literal["full", "freeze", "lora", "dora", "qlora"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
DataFormat = Literal["auto", "messages", "sharegpt", "alpaca", "text", "preference", "kto"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    path: str = Field(description="local directory or hub id of the model (and tokenizer)")
    tokenizer: str | None = Field(None, description="tokenizer location when it differs from `path`")
    chat_template: str | None = Field(
        None, description="null = the tokenizer's own; a built-in name (chatml, llama3, ...) or a .jinja path"
    )
    init: Literal["pretrained", "from_config"] = "pretrained"
    config: dict[str, Any] | str | None = Field(
        None, description="with init: from_config, a config dict or a config.json path (default: path's config)"
    )
    dtype: Dtype = "auto"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


class LoraSpec(Section):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target: str | list[str] = "all-linear"
    modules_to_save: list[str] = Field(default_factory=list)


class FreezeSpec(Section):
    layers: int = Field(2, ge=0, description="train only the last N decoder layers")
    modules: list[str] = Field(default_factory=list, description="further trainable modules by name, e.g. lm_head")


class QuantSpec(Section):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Dtype = "auto"


class TuningSpec(Section):
    method: TuningMethod = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    quant: QuantSpec = Field(default_factory=QuantSpec)


class DataSource(Section):
    """One dataset: a file, directory or glob (`path`), a registry entry (`name`) or a hub id (`hub`)."""

    path: str | None = None
    name: str | None = Field(None, description="a dataset named in data.registry")
    hub: str | None = Field(None, description="a hub dataset id, read with datasets.load_dataset")
    subset: str | None = Field(None, description="hub: the dataset's configuration name")
    split: str = Field("train", description="hub: which split to read")
    format: DataFormat = "auto"
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical key -> key in this data, e.g. {instruction: question}"
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="sharegpt: role_tag, content_tag, user_tag, assistant_tag, ... overrides"
    )
    weight: float | None = Field(None, gt=0, description="mixing: use weight x this dataset's size")
    ratio: float | None = Field(None, gt=0, le=1, description="mixing: this dataset's share of the mix")
    samples: int | None = Field(None, gt=0, description="mixing: exactly this many samples (repeats if needed)")

    @model_validator(mode="after")
    def _one_location_one_mix(self) -> "DataSource":
        located = [k for k in ("path", "name", "hub") if getattr(self, k)]
        if len(located) != 1:
            raise ValueError("give exactly one of `path`, `name` (a registry entry) or `hub` for each dataset")
        mixing = [k for k in ("weight", "ratio", "samples") if getattr(self, k) is not None]
        if len(mixing) > 1:
            raise ValueError(f"give at most one of weight, ratio, samples (got {', '.join(mixing)})")
        return self

    def label(self) -> str:
        return self.path or self.name or f"hub:{self.hub}"


class EvalSplit(Section):
    fraction: float | None = Field(None, gt=0, lt=1)
    path: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "EvalSplit":
        if self.fraction is not None and self.path is not None:
            raise ValueError("give either `fraction` or `path` for the eval split, not both")
        return self


class DataSpec(Section):
    train: list[DataSource] = Field(min_length=1)
    eval: EvalSplit | None = None
    registry: str | None = Field(
        None, description="a dataset registry (YAML/JSON) or LLaMA-Factory dataset_info.json, or its directory"
    )
    max_length: int = Field(2048, gt=8)
    packing: bool = Field(
        False,
        description="pt: keep documents whole and pack them into bins instead of joining and cutting into blocks",
    )
    train_on: Literal["all_assistant", "last_assistant", "everything"] = Field(
        "all_assistant", description="which tokens carry loss in chat data"
    )
    split_turns: Literal["auto", "always", "never"] = Field(
        "auto",
        description="one sample per assistant turn (history rendered as at inference): auto = only for "
        "conversations whose template breaks the prefix property",
    )
    truncation: Literal["cut", "drop"] = Field(
        "cut", description="over-long samples: cut (shorten the prompt first, keep trained tokens) or drop"
    )
    on_error: Literal["strict", "skip"] = Field(
        "strict", description="bad records: stop (strict) or skip, count and write them to a rejects file"
    )
    cache: bool = True
    cache_dir: str | None = Field(None, description="default: ~/.cache/lmforge (LMFORGE_CACHE overrides)")
    workers: int | None = Field(None, ge=1, description="preprocessing processes (default: CPU count, at most 8)")
    seed: int = 42


class TrainSpec(Section):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2.0e-4, gt=0)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup: float = Field(0.03, ge=0, description="a fraction of the steps if < 1, else a number of steps")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    save_every: int = Field(500, gt=0)
    keep: int = Field(3, gt=0)
    eval_every: int | None = Field(None, gt=0)
    log_every: int = Field(10, gt=0)
    seed: int = 42
    activation_checkpointing: bool = False
    extra: dict[str, Any] = Field(
        default_factory=dict, description="passed as they are to transformers.TrainingArguments"
    )

    @field_validator("warmup")
    @classmethod
    def _integral_steps(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("a warmup >= 1 is a number of steps and must be a whole number")
        return v


class Recipe(Section):
    stage: Stage = "sft"
    model: ModelSpec
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    output: str

    @model_validator(mode="after")
    def _scratch_needs_full(self) -> "Recipe":
        if self.model.init == "from_config" and self.tuning.method != "full":
            raise ValueError(
                f"model.init: from_config starts from random weights, so only tuning.method: full can train it "
                f"(got {self.tuning.method!r}); pretrain with full first, then adapt the saved model"
            )
        return self
