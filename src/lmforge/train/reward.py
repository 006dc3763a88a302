"""Reward models: a sequence-classification head with one output, trained on preference pairs.

Loss: -log σ(r_chosen - r_rejected - m), m = `preference.margin` (0: InstructGPT's loss; Llama 2 adds
the margin). The reward of a conversation is the head's output at its last token that is not padding
(transformers' pooling for sequence classification, which is why the config carries the pad token id;
padding is on the right). Eval reports accuracy (the share of pairs ranked right) and the mean margin
r_chosen - r_rejected, as `eval_accuracy` and `eval_margin`.

The head is new, so it trains whole under every tuning method (`apply_tuning(..., head=REWARD_HEAD)`: with
LoRA or DoRA it is no target and joins `lora.modules_to_save`, in a peft SEQ_CLS adapter; with freeze it
joins `freeze.modules`). The model is loaded by model/load.load_reward_model; infer/score.py scores
conversations with a trained run.
"""

from __future__ import annotations

import torch

from lmforge.config.recipe import PreferenceSpec, Recipe
from lmforge.model.adapters import SEQ_CLS, apply_tuning
from lmforge.model.load import REWARD_HEAD, load_reward_model
from lmforge.train.preference import MetricsTrainer, PairCollator
from lmforge.train.preference_losses import reward_pairwise_loss


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
    model = apply_tuning(model, recipe.tuning, task_type=SEQ_CLS, head=REWARD_HEAD)
    return RewardTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                         data_collator=PairCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                         callbacks=callbacks, margin=spec.margin)
