"""Preference training: the reward model (rm), DPO (sigmoid, IPO, hinge, cDPO), SimPO, ORPO and KTO, on one
`PreferenceTrainer` that picks its loss by stage (the losses themselves are in preference_losses.py).

rm, DPO, SimPO and ORPO run the chosen and the rejected sides of a batch in one forward pass (the
collator stacks them: rows [0, B) chosen, [B, 2B) rejected).

The reward model is the starting model with a new one-output classification head (model/load.
load_reward_model). Loss: -log σ(r_chosen - r_rejected - m), m = `preference.margin` (0: InstructGPT's
loss; Llama 2 adds the margin). The reward of a conversation is the head's output at its last token that
is not padding (padding is on the right). Eval reports accuracy (the share of pairs ranked right) and the
mean margin r_chosen - r_rejected, as `eval_accuracy` and `eval_margin`. The head is new, so it trains
whole under every tuning method (`apply_tuning(..., head=REWARD_HEAD)`: with LoRA or DoRA it is no target
and joins `lora.modules_to_save`, in a peft SEQ_CLS adapter; with freeze it joins `freeze.modules`).
`lmforge score` (infer/score.py) scores conversations with a trained reward run.

DPO and KTO need the reference model's log-probabilities, from one of (`preference.reference`):
- copy: a frozen copy of the starting model, in eval mode;
- adapter: the same model with its peft adapter disabled (`with model.disable_adapter():`), so no
  second copy exists (LoRA, DoRA, QLoRA);
- either one once before training when `preference.precompute_reference` is set: the values are
  added to the examples as columns (`rows.WithColumns`) and the copy is freed.
IPO follows the paper (Azar et al. eq. 17) on summed log-probs; TRL divides each log-ratio by the
completion length first. KTO's mismatched pairs for the KL estimate are fixed by the data
(`data/pairs.add_kl_pairs`); the policy scores them without gradient.

Metrics carry TRL's names and meaning (`rewards/chosen`, `rewards/margins`, `logps/rejected`,
`logits/chosen`, ...). They are kept for every batch and averaged over the batches between two
log events; eval metrics get the `eval_` prefix (metrics.MetricLog).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

from lmforge.config.recipe import PreferenceSpec, Recipe
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.rows import WithColumns
from lmforge.errors import LmforgeError
from lmforge.model.adapters import SEQ_CLS, apply_tuning
from lmforge.model.load import REWARD_HEAD, load_model, load_reward_model
from lmforge.train import ranks
from lmforge.train.guards import RunGuards
from lmforge.train.metrics import MetricLog, TokenCounter, split_of
from lmforge.train.preference_losses import (
    chosen_nll,
    dpo_loss,
    kto_loss,
    orpo_loss,
    reward_pairwise_loss,
    sequence_logps,
    simpo_loss,
)

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

PAIR_REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")
KTO_REFERENCE_KEYS = ("reference_logps", "reference_kl_logps")
REFERENCE_STAGES = ("dpo", "kto")


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _padded(ids: list[list[int]], labels: list[list[int]], pad_token_id: int, prefix: str = "") -> dict:
    return {
        f"{prefix}input_ids": pad_rows(ids, pad_token_id),
        f"{prefix}labels": pad_rows(labels, IGNORE_INDEX),
        f"{prefix}attention_mask": pad_rows([[1] * len(r) for r in ids], 0),
    }


class PairCollator:
    """Pairs to one batch of 2B rows, chosen first then rejected, right-padded; stored reference values kept."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        labels = [r["chosen_labels"] for r in rows] + [r["rejected_labels"] for r in rows]
        return {**_padded(ids, labels, self.pad_token_id), **_floats(rows, PAIR_REFERENCE_KEYS)}


class KTOCollator:
    """KTO examples and their mismatched (KL) pairs, right-padded; `desirable` as a boolean tensor."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = _padded([r["input_ids"] for r in rows], [r["labels"] for r in rows], self.pad_token_id)
        batch.update(
            _padded([r["kl_input_ids"] for r in rows], [r["kl_labels"] for r in rows], self.pad_token_id, "kl_")
        )
        batch["desirable"] = torch.tensor([bool(r["desirable"]) for r in rows])
        return {**batch, **_floats(rows, KTO_REFERENCE_KEYS)}


def _floats(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([r[k] for r in rows], dtype=torch.float32) for k in keys if k in rows[0]}


class PreferenceTrainer(RunGuards, Trainer):
    """rm, dpo, simpo, orpo (pairs) and kto (examples): the stage's loss, the reference handling the module
    docstring gives, trained tokens (metrics.TokenCounter) and each batch's metrics averaged over the log
    interval (metrics.MetricLog)."""

    def __init__(
        self,
        *args: Any,
        stage: str,
        spec: PreferenceSpec,
        reference: str | None = None,
        ref_model: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # the losses are batch means: Trainer divides by grad_accum
        self.tokens, self.metric_log = TokenCounter(ranks.sum_across), MetricLog()
        self.stage, self.spec, self.beta = stage, spec, spec.beta_for(stage)
        self.reference = reference if stage in REFERENCE_STAGES else None
        self.ref_model = ref_model
        if self.reference == "copy":
            if ref_model is None:
                raise LmforgeError(f"{stage}: reference copy needs the frozen copy of the starting model (ref_model)")
            self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        if self.reference == "adapter" and not hasattr(self.accelerator.unwrap_model(self.model), "disable_adapter"):
            raise LmforgeError(
                f"{stage}: preference.reference adapter needs a peft model (tuning.method lora, dora or "
                "qlora); use preference.reference: copy"
            )
        if spec.precompute_reference and self.reference:
            self.precompute_reference()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and "labels" in inputs:
            self.tokens.add(inputs["labels"])
        loss, metrics = self.pair_loss(model, inputs)
        self.metric_log.add("train" if model.training else "eval", metrics)
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = split_of(logs)
        if split is not None:
            self.metric_log.mean_into(logs, split)
        self.tokens.log_into(logs)
        super().log(logs, start_time)

    # ---------------------------------------------------------------- losses

    def pair_loss(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage's loss on one batch and its metrics."""
        if self.stage == "rm":
            return self._reward_loss(model, inputs)
        if self.stage == "kto":
            return self._kto_loss(model, inputs)
        logits = _logits(model, inputs)
        sums, counts = sequence_logps(logits, inputs["labels"])
        n = sums.shape[0] // 2
        if self.stage == "dpo":
            ref = self._reference(model, inputs, PAIR_REFERENCE_KEYS, "")
            loss, metrics = dpo_loss(
                sums[:n],
                sums[n:],
                ref[:n],
                ref[n:],
                beta=self.beta,
                loss_type=self.spec.loss,
                label_smoothing=self.spec.label_smoothing,
            )
            if self.spec.sft_weight:
                nll = chosen_nll(sums[:n], counts[:n])
                loss = loss + self.spec.sft_weight * nll
                metrics["nll_loss"] = float(nll.detach())
        else:
            means = sums / counts.clamp(min=1)
            if self.stage == "simpo":
                loss, metrics = simpo_loss(means[:n], means[n:], beta=self.beta, gamma=self.spec.simpo_gamma)
            else:
                loss, metrics = orpo_loss(means[:n], means[n:], beta=self.beta)
        metrics.update(logit_metrics(logits, inputs["labels"], n))
        return loss, metrics

    def _reward_loss(self, model, inputs):
        """Pairwise loss on the classification head's one output per row (chosen rows first, then rejected)."""
        rewards = (
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            .logits.squeeze(-1)
            .float()
        )
        n = rewards.shape[0] // 2
        margin = torch.full_like(rewards[:n], self.spec.margin) if self.spec.margin else None
        return reward_pairwise_loss(rewards[:n], rewards[n:], margin)

    def _kto_loss(self, model, inputs):
        logps = sequence_logps(_logits(model, inputs), inputs["labels"])[0]
        with torch.no_grad():
            policy_kl = sequence_logps(_logits(model, inputs, "kl_"), inputs["kl_labels"])[0]
        ref = self._reference(model, inputs, ("reference_logps",), "")
        ref_kl = self._reference(model, inputs, ("reference_kl_logps",), "kl_")
        return kto_loss(
            logps,
            ref,
            inputs["desirable"],
            policy_kl,
            ref_kl,
            beta=self.beta,
            desirable_weight=self.spec.desirable_weight,
            undesirable_weight=self.spec.undesirable_weight,
        )

    def _reference(self, model, inputs, keys: tuple[str, ...], prefix: str) -> torch.Tensor:
        """Summed reference log-probs of the rows under `prefix`: stored with the examples, or computed now."""
        if keys and all(k in inputs for k in keys):
            return torch.cat([inputs[k] for k in keys])
        with torch.no_grad():
            if self.ref_model is not None:
                logits = _logits(self.ref_model, inputs, prefix)
            else:
                with self.accelerator.unwrap_model(model).disable_adapter():
                    logits = _logits(model, inputs, prefix)
            return sequence_logps(logits, inputs[f"{prefix}labels"])[0]

    # ---------------------------------------------------------------- precomputed reference

    def precompute_reference(self) -> None:
        """Score train and eval examples with the reference once, add the values to them as columns (the
        rows may be built anew on each read, so they are not changed in place), free the copy."""
        keys = KTO_REFERENCE_KEYS if self.stage == "kto" else PAIR_REFERENCE_KEYS
        model = self.model
        was_training = model.training
        model.eval()
        size = self.args.per_device_eval_batch_size
        for split in ("train_dataset", "eval_dataset"):
            dataset = getattr(self, split)
            if dataset is None:
                continue
            columns: dict[str, list[float]] = {key: [] for key in keys}
            for start in range(0, len(dataset), size):
                rows = dataset[start : start + size]
                batch = self._prepare_inputs(self.data_collator(rows))
                if self.stage == "kto":
                    values = [self._reference(model, batch, (), ""), self._reference(model, batch, (), "kl_")]
                else:
                    both = self._reference(model, batch, (), "")
                    values = [both[: len(rows)], both[len(rows) :]]
                for key, column in zip(keys, values):
                    columns[key].extend(column.tolist())
            setattr(self, split, WithColumns(dataset, columns))
        model.train(was_training)
        self.ref_model = None


def _logits(model, inputs: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    return model(
        input_ids=inputs[f"{prefix}input_ids"], attention_mask=inputs[f"{prefix}attention_mask"], use_cache=False
    ).logits


def logit_metrics(logits: torch.Tensor, labels: torch.Tensor, n: int) -> dict[str, float]:
    """TRL's logits/chosen and logits/rejected: the mean logit over the completions' scored positions."""
    mask = labels[:, 1:] != IGNORE_INDEX
    out = {}
    with torch.no_grad():
        for side, rows in (("chosen", range(n)), ("rejected", range(n, 2 * n))):
            total = sum(logits[r, :-1][mask[r]].float().sum() for r in rows)
            count = int(mask[list(rows)].sum()) * logits.shape[-1]
            out[f"logits/{side}"] = float(total / max(count, 1))
    return out


def make_preference_trainer(recipe: Recipe, tokenizer: Tokenizer, data, args, callbacks) -> PreferenceTrainer:
    """The trainer of an rm, dpo, simpo, orpo or kto recipe: the model, its reference and the collator."""
    spec = recipe.preference or PreferenceSpec()
    reference = spec.reference_for(recipe.tuning.method) if recipe.stage in REFERENCE_STAGES else None
    ref_model = None
    if recipe.stage == "rm":
        model = load_reward_model(recipe.model, recipe.tuning, tokenizer)
        model = apply_tuning(model, recipe.tuning, task_type=SEQ_CLS, head=REWARD_HEAD)
    else:
        model = load_model(recipe.model, recipe.tuning, tokenizer=tokenizer)
        ref_model = copy.deepcopy(model) if reference == "copy" else None
        model = apply_tuning(model, recipe.tuning)
    collator = KTOCollator(tokenizer.pad_token_id) if recipe.stage == "kto" else PairCollator(tokenizer.pad_token_id)
    return PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        stage=recipe.stage,
        spec=spec,
        reference=reference,
        ref_model=ref_model,
        on_nan=recipe.train.on_nan,
    )
