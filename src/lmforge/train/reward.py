"""Reward models: a sequence-classification head with one output, trained on preference pairs.

Loss: -log σ(r_chosen - r_rejected - m), m = `preference.margin` (0: InstructGPT's loss; Llama 2 adds
the margin). The reward of a conversation is the head's output at its last token that is not padding
(transformers' pooling for sequence classification, which is why the config carries the pad token id;
padding is on the right). Eval reports accuracy (the share of pairs ranked right) and the mean margin
r_chosen - r_rejected, as `eval_accuracy` and `eval_margin`.

The head is new, so it trains whole under every tuning method (`apply_tuning(..., head="score")`: with
LoRA or DoRA it is no target and joins `lora.modules_to_save`, in a peft SEQ_CLS adapter; with freeze it
joins `freeze.modules`). `score_conversation(run_dir, messages)` scores one conversation
with a trained run, rendered through the run's chat template exactly as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.config.recipe import ModelSpec, PreferenceSpec, Recipe, TuningSpec
from lmforge.errors import LmforgeError
from lmforge.model.adapters import SEQ_CLS, apply_tuning
from lmforge.model.load import match_vocab, quantization_config, resolve_attention, resolve_dtype
from lmforge.train.preference import MetricsTrainer, PairCollator
from lmforge.train.preference_losses import reward_pairwise_loss

HEAD = "score"  # the sequence-classification head's name in transformers' decoder models
TEMPLATE_FILE = "chat_template.jinja"
ADAPTER_CONFIG = "adapter_config.json"


def load_reward_model(spec: ModelSpec, tuning: TuningSpec, tokenizer):
    """The model at `model.path` with a new one-output classification head, padding known to its config."""
    from transformers import AutoModelForSequenceClassification

    if spec.init != "pretrained":
        raise LmforgeError("stage rm: model.init must be pretrained (a reward model starts from a trained model, "
                           "usually the SFT one); train with stage pt or sft first")
    dtype = resolve_dtype(spec.dtype)
    extra = {"quantization_config": quantization_config(tuning.quant, dtype)} if tuning.method == "qlora" else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            spec.path, num_labels=1, dtype=dtype, attn_implementation=resolve_attention(spec.attn_implementation),
            trust_remote_code=spec.trust_remote_code, **extra)
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as err:
        raise LmforgeError(f"model.path: could not load {spec.path!r} as a sequence-classification model for stage rm "
                           f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}); "
                           "expected a decoder model directory with config.json and weights") from err
    model.config.pad_token_id = tokenizer.pad_token_id
    if extra:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    match_vocab(model, tokenizer)
    return model


class RewardTrainer(MetricsTrainer):
    """Pairwise reward-model training on PairCollator batches (chosen rows first, then rejected)."""

    def __init__(self, *args, margin: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.margin = margin

    def pair_loss(self, model, inputs):
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        use_cache=False).logits.squeeze(-1).float()
        n = rewards.shape[0] // 2
        margin = torch.full_like(rewards[:n], self.margin) if self.margin else None
        return reward_pairwise_loss(rewards[:n], rewards[n:], margin)


def make_reward_trainer(recipe: Recipe, tokenizer, data, args, callbacks) -> RewardTrainer:
    spec = recipe.preference or PreferenceSpec()
    model = load_reward_model(recipe.model, recipe.tuning, tokenizer)
    model = apply_tuning(model, recipe.tuning, task_type=SEQ_CLS, head=HEAD)
    return RewardTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         data_collator=PairCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                         callbacks=callbacks, margin=spec.margin)


# ---------------------------------------------------------------- scoring


class RewardScorer:
    """A trained reward run, loaded once: call it with a conversation's messages to get its reward."""

    def __init__(self, run_dir: Path) -> None:
        self.model, self.tokenizer = _load_run(Path(run_dir))
        saved = Path(run_dir) / TEMPLATE_FILE
        self.template = saved.read_text(encoding="utf-8") if saved.is_file() else self.tokenizer.chat_template
        if not isinstance(self.template, str):
            raise LmforgeError(f"{run_dir} has no {TEMPLATE_FILE} and its tokenizer no chat template; copy the "
                               f"template the run was trained with to {saved}")

    @torch.no_grad()
    def __call__(self, messages: list[dict]) -> float:
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.model.device)
        return float(self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0])


def score_conversation(run_dir: Path, messages: list[dict]) -> float:
    """The reward a trained rm run gives one conversation (a list of {"role", "content"} messages)."""
    return RewardScorer(run_dir)(messages)


def score_file(run_dir: Path, path: Path) -> list[float]:
    """Rewards of every {"messages": [...]} line of a JSON Lines file, in order."""
    scorer = RewardScorer(run_dir)
    scores = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                messages = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise LmforgeError(f"{path}:{n}: expected a JSON object with a \"messages\" list ({err})") from None
            scores.append(scorer(messages))
    return scores


def _load_run(run_dir: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (run_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(str(run_dir)).base_model_name_or_path
        if not base or not Path(base).exists():
            raise LmforgeError(f"{run_dir / ADAPTER_CONFIG}: base_model_name_or_path {base!r} is not a local "
                               "directory; edit that key to where the base model is")
        model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
                                          str(run_dir))
    elif (run_dir / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(str(run_dir))
    else:
        raise LmforgeError(f"{run_dir} holds neither a model (config.json) nor an adapter ({ADAPTER_CONFIG}); pass "
                           "the output directory of a finished rm run")
    if getattr(model.config, "num_labels", 1) != 1:
        raise LmforgeError(f"{run_dir} is not a reward model (its head has {model.config.num_labels} outputs); pass "
                           "the output directory of a stage rm run")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer
