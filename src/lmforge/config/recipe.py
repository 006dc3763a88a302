"""The recipe: one validated YAML document that says what to train, on what, and how.

Every section forbids unknown keys so a typo fails loudly (see `load.py` for the
did-you-mean messages). Rare engine options go through `train.extra`, passed as
they are to `transformers.TrainingArguments`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stage = Literal["pt", "sft", "rm", "dpo", "simpo", "orpo", "kto"]
PREFERENCE_STAGES = ("rm", "dpo", "simpo", "orpo", "kto")
PROFILE_WARMUP_STEPS = 2  # train.profile_steps leaves out the first steps (allocation, kernel choice, compiling)
TuningMethod = Literal["full", "freeze", "lora", "dora", "qlora"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
DataFormat = Literal["auto", "messages", "sharegpt", "alpaca", "text", "preference", "kto"]
Tracker = Literal["tensorboard", "wandb", "mlflow", "swanlab"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    path: str = Field(description="local directory or hub id of the model (and tokenizer)")
    tokenizer: str | None = Field(None, description="tokenizer location when it differs from `path`")
    chat_template: str | None = Field(
        None, description="null = the tokenizer's own; a built-in name (chatml, llama3, ...) or a .jinja path"
    )
    init: Literal["pretrained", "from_config"] = Field(
        "pretrained",
        description="pretrained = the weights at `path`; from_config = random weights built from "
        "`config` (training from scratch, with tuning.method full)",
    )
    config: dict[str, Any] | str | None = Field(
        None, description="with init: from_config, a config dict or a config.json path (default: path's config)"
    )
    dtype: Dtype = Field(
        "auto",
        description="dtype of the weights (bf16 and fp16 also train in mixed precision); auto = bf16 on a "
        "CUDA GPU that supports it, fp32 elsewhere",
    )
    attn_implementation: str = Field(
        "auto",
        description="auto = lmforge_varlen for packed pt/sft (padding-free, no attention between samples), "
        "sdpa otherwise; or a transformers name: sdpa, eager, flash_attention_2, flex_attention, ...",
    )
    trust_remote_code: bool = Field(
        False,
        description="let transformers run Python code that comes with the model and tokenizer (only for a "
        "source you trust)",
    )


class LoraSpec(Section):
    r: int = Field(16, gt=0, description="rank of the low-rank update matrices")
    alpha: float = Field(32, gt=0, description="scaling: the update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input; 0 = none")
    target: str | list[str] = Field(
        "all-linear",
        description="layers that get an adapter: all-linear (every linear layer but the output "
        "head) or module names, each its full dotted name or its last parts (q_proj, v_proj, ...)",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="modules trained whole and saved with the adapter, e.g. [embed_tokens, lm_head]",
    )


class FreezeSpec(Section):
    layers: int = Field(2, ge=0, description="train only the last N decoder layers")
    modules: list[str] = Field(default_factory=list, description="further trainable modules by name, e.g. lm_head")


class QuantSpec(Section):
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit data type of the frozen base weights (bitsandbytes): nf4 (NormalFloat) or fp4"
    )
    double_quant: bool = Field(
        True, description="quantise the quantisation constants too (about 0.4 bits less per weight)"
    )
    compute_dtype: Dtype = Field("auto", description="dtype of the products with the 4-bit weights; auto = model.dtype")


class TuningSpec(Section):
    method: TuningMethod = Field(
        "lora",
        description="which weights train: full (all), freeze (the last layers, see tuning.freeze), lora, "
        "dora (weight-decomposed LoRA) or qlora (LoRA on a 4-bit base, see tuning.quant)",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="the adapter of methods lora, dora and qlora")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="what trains under method freeze")
    quant: QuantSpec = Field(default_factory=QuantSpec, description="method qlora: how the base model is quantised")


class DataSource(Section):
    """One dataset: a file, directory or glob (`path`), a registry entry (`name`) or a hub id (`hub`)."""

    path: str | None = Field(
        None,
        description="a data file (.jsonl, .json, .parquet, .csv, or .txt: one document a line), a directory of "
        "them or a glob, relative to the current directory; give exactly one of path, name, hub",
    )
    name: str | None = Field(None, description="a dataset named in data.registry")
    hub: str | None = Field(None, description="a hub dataset id, read with datasets.load_dataset")
    subset: str | None = Field(None, description="hub: the dataset's configuration name")
    split: str = Field("train", description="hub: which split to read")
    format: DataFormat = Field(
        "auto", description="the records' format; auto = told by the keys of the first readable record of each file"
    )
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
    def _one_location_one_mix(self) -> DataSource:
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
    fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="hold out this share of the mixed training records (at least one), drawn with data.seed",
    )
    path: str | None = Field(
        None, description="eval data from a file, directory or glob instead (format auto); not with fraction"
    )

    @model_validator(mode="after")
    def _one_of(self) -> EvalSplit:
        if self.fraction is not None and self.path is not None:
            raise ValueError("give either `fraction` or `path` for the eval split, not both")
        return self


class DataSpec(Section):
    train: list[DataSource] = Field(
        min_length=1,
        description="the training datasets, in order; each may set one of weight, ratio or samples "
        "to mix them (none: each whole, once)",
    )
    eval: EvalSplit | None = Field(
        None, description="an eval split, evaluated every train.eval_every steps and at the end; null = none"
    )
    registry: str | None = Field(
        None, description="a dataset registry (YAML/JSON) or LLaMA-Factory dataset_info.json, or its directory"
    )
    max_length: int = Field(
        2048,
        gt=8,
        description="the most tokens in a sample or packed row; longer samples follow `truncation` "
        "(pt: the length of each block)",
    )
    packing: bool = Field(
        False,
        description="pack samples best-fit-decreasing into rows of max_length, each with its own position ids; "
        "attention never crosses samples (pt: documents kept whole instead of joined and cut into blocks)",
    )
    group_by_length: bool = Field(
        False,
        description="without packing: put samples of similar length in the same batch so less of it is padding "
        "(batches are still drawn in random order)",
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
    cache: bool = Field(
        True,
        description="reuse the examples preprocessed by an earlier run with the same data, tokenizer, "
        "template and data settings; false = preprocess every time and store nothing",
    )
    cache_dir: str | None = Field(None, description="default: ~/.cache/lmforge (LMFORGE_CACHE overrides)")
    workers: int | None = Field(None, ge=1, description="preprocessing processes (default: CPU count, at most 8)")
    seed: int = Field(42, description="seed of the mixing draw and of the eval fraction split")


class TrainSpec(Section):
    epochs: float = Field(3, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(
        8,
        gt=0,
        description="samples (packed rows with data.packing) per device in one forward pass; also the eval batch size",
    )
    grad_accum: int = Field(
        1, gt=0, description="forward passes per optimizer step: a step sees batch_size x grad_accum x devices samples"
    )
    lr: float = Field(2.0e-4, gt=0, description="peak learning rate, reached at the end of warmup")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine",
        description="learning-rate schedule: cosine and linear decay to 0 after warmup; constant ignores "
        "warmup, constant_with_warmup does not",
    )
    warmup: float = Field(0.03, ge=0, description="a fraction of the steps if < 1, else a number of steps")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay of the AdamW optimizer; 0 = none")
    max_grad_norm: float = Field(1.0, ge=0, description="clip the gradients' global norm to this; 0 = no clipping")
    save_every: int = Field(500, gt=0, description="save a checkpoint (<output>/checkpoint-N) every N optimizer steps")
    keep: int = Field(
        3, gt=0, description="complete checkpoints kept; older ones are deleted (never the newest complete one)"
    )
    on_nan: Literal["stop", "skip"] = Field(
        "stop",
        description="a step whose loss or gradient norm is NaN/inf: stop the run there (nothing after it is saved) "
        "or skip its update and go on (the skipped steps are counted at the end)",
    )
    eval_every: int | None = Field(
        None, gt=0, description="with data.eval: evaluate every N optimizer steps (default: save_every)"
    )
    log_every: int = Field(10, gt=0, description="print and record the loss every N optimizer steps")
    seed: int = Field(
        42, description="seed of new weights (from_config, adapters, heads), dropout and the order of batches"
    )
    activation_checkpointing: bool = Field(
        False,
        description="recompute activations in the backward pass instead of keeping them: less memory, "
        "slower steps (about a fifth)",
    )
    loss_chunk: int | Literal["auto", "off"] = Field(
        "auto",
        description="compute the loss from hidden states in chunks of this many tokens so full-vocabulary logits "
        "are never held for the batch and only trained tokens reach the output layer; auto = on (chunk sized to "
        "the vocabulary) wherever it equals the model's own loss; off = the model's own loss",
    )
    compile: bool = Field(False, description="torch.compile the model (first steps are slow while it compiles)")
    profile_steps: int = Field(
        0,
        ge=0,
        description=f"record this many optimizer steps with torch.profiler, after {PROFILE_WARMUP_STEPS} "
        "warm-up steps: <output>/profile/summary.txt (operators by time) and trace.json (the timeline); 0 = off",
    )
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers that receive the logged metrics (rank 0 only): tensorboard writes "
        "<output>/tensorboard; wandb, mlflow and swanlab need their extra (pip install 'lmforge[wandb]') and read "
        "their own environment (WANDB_MODE, MLFLOW_TRACKING_URI, ...); [] or none = no tracker",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="passed as they are to transformers.TrainingArguments"
    )

    @field_validator("loss_chunk", mode="before")
    @classmethod
    def _chunk_setting(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML reads a bare off/on as a boolean
            return "auto" if v else "off"
        if isinstance(v, int) and v < 1:
            raise ValueError("loss_chunk is a number of tokens per chunk (>= 1), auto or off")
        return v

    @field_validator("report_to", mode="before")
    @classmethod
    def _tracker_list(cls, v: Any) -> Any:
        if v is None or v == "none" or v == ["none"]:
            return []
        if isinstance(v, str):  # one tracker, also as an override: train.report_to=wandb
            return [v]
        return list(dict.fromkeys(v)) if isinstance(v, list) else v

    @field_validator("extra")
    @classmethod
    def _trackers_not_in_extra(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "report_to" in v:
            raise ValueError(
                "report_to is a key of train, not of train.extra: set train.report_to (checked before any "
                "data work, with the extra to install named)"
            )
        return v

    @field_validator("warmup")
    @classmethod
    def _integral_steps(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("a warmup >= 1 is a number of steps and must be a whole number")
        return v

    @model_validator(mode="after")
    def _profiled_steps_run(self) -> TrainSpec:
        needed = PROFILE_WARMUP_STEPS + self.profile_steps
        if self.profile_steps and self.max_steps is not None and self.max_steps < needed:
            raise ValueError(
                f"profile_steps {self.profile_steps} (recorded after {PROFILE_WARMUP_STEPS} warm-up "
                f"steps) need max_steps >= {needed} (it is {self.max_steps})"
            )
        return self


class FsdpSpec(Section):
    offload: bool = Field(False, description="keep parameters and gradients on the CPU between uses (less GPU memory)")
    reshard_after_forward: bool = Field(
        True, description="free each layer's gathered weights after its forward (full shard); false keeps them"
    )
    checkpoint: Literal["sharded", "full"] = Field(
        "sharded", description="checkpoint-N as one file per rank (sharded) or one gathered state dict (full)"
    )


class DeepSpeedSpec(Section):
    stage: Literal[1, 2, 3] = Field(2, description="ZeRO stage of the shipped preset: 1, 2 or 3")
    offload_optimizer: bool = Field(False, description="keep the optimizer states on the CPU")
    offload_params: bool = Field(False, description="keep the parameters on the CPU (stage 3 only)")
    config: str | None = Field(
        None, description="your own DeepSpeed JSON instead of the preset; its `auto` values are filled from the recipe"
    )

    @model_validator(mode="after")
    def _params_offload_needs_stage_3(self) -> DeepSpeedSpec:
        if self.offload_params and self.config is None and self.stage != 3:
            raise ValueError(f"offload_params needs stage 3 (stage is {self.stage}): ZeRO shards parameters only there")
        return self


class DistributedSpec(Section):
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = Field(
        "ddp",
        description="how several processes (torchrun, --nproc) share the work: ddp = a full copy per process, "
        "fsdp2 = weights, gradients and optimizer sharded by decoder layer, deepspeed = ZeRO 1/2/3",
    )
    fsdp: FsdpSpec = Field(default_factory=FsdpSpec, description="strategy fsdp2's options")
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="strategy deepspeed's options")


class PreferenceSpec(Section):
    """Settings of the preference stages (rm, dpo, simpo, orpo, kto); see train/preference_losses.py."""

    loss: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="dpo: the loss on the log-ratio margin")
    beta: float | None = Field(
        None,
        gt=0,
        description="dpo/kto: KL strength β (default 0.1); simpo: reward scale β (default 2.0); "
        "orpo: weight λ of the odds-ratio term (default 0.1, TRL's `beta`)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo sigmoid: conservative DPO's flip rate ε")
    margin: float = Field(0.0, description="rm: the margin m in -log σ(r_chosen - r_rejected - m)")
    reference: Literal["auto", "copy", "adapter"] = Field(
        "auto",
        description="dpo/kto reference model: a frozen copy, or the base with the adapter disabled "
        "(no second copy); auto = adapter for lora/dora/qlora, copy otherwise",
    )
    precompute_reference: bool = Field(
        False, description="dpo/kto: score the data with the reference once before training, then free it"
    )
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="dpo: weight of an NLL term on the chosen replies (mean over their tokens) added to "
        "the loss, as in RPO (Pang et al. 2024); keeps DPO from lowering the chosen replies' likelihood. TRL: "
        "loss_type [sigmoid, sft] with loss_weights [1, w]",
    )
    simpo_gamma: float = Field(0.5, description="simpo: the target reward margin γ")
    desirable_weight: float = Field(1.0, gt=0, description="kto: λ_D, the weight of desirable examples")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: λ_U, the weight of undesirable examples")

    def beta_for(self, stage: str) -> float:
        """`beta`, or the stage's usual default when unset."""
        return self.beta if self.beta is not None else (2.0 if stage == "simpo" else 0.1)

    def reference_for(self, method: str) -> str:
        """copy or adapter: `auto` resolved for a tuning method."""
        if self.reference != "auto":
            return self.reference
        return "adapter" if method in ("lora", "dora", "qlora") else "copy"


class Recipe(Section):
    stage: Stage = Field(
        "sft",
        description="pt = pretraining on text, sft = supervised fine-tuning on chats, rm = a reward model, "
        "dpo/simpo/orpo/kto = preference tuning",
    )
    model: ModelSpec = Field(description="the model and tokenizer to start from")
    tuning: TuningSpec = Field(default_factory=TuningSpec, description="which weights train, and how")
    data: DataSpec = Field(description="the training and eval data, and how it becomes examples")
    train: TrainSpec = Field(
        default_factory=TrainSpec, description="the training loop: length, batch, optimizer, checkpoints, logging"
    )
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="several processes (torchrun, accelerate launch, lmforge train --nproc): ddp, fsdp2 or deepspeed",
    )
    preference: PreferenceSpec | None = Field(
        None, description="settings of stages rm, dpo, simpo, orpo and kto (not pt or sft); null = every default"
    )
    output: str = Field(
        description="the run directory: the final model or adapter, checkpoints, logs; a non-empty one is reused "
        "only with lmforge train --resume or --overwrite"
    )

    @model_validator(mode="after")
    def _sections_agree(self) -> Recipe:
        """The checks across sections (checks.py), in order; the first that fails is the error."""
        from lmforge.config.checks import problem_across_sections

        problem = problem_across_sections(self)
        if problem:
            raise ValueError(problem)
        return self
