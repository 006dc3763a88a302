"""Score conversations with a trained reward model (`lmforge score`): the reward of each conversation, rendered
through the run's chat template exactly as in training. The run is loaded by infer/load.load_run with its
reward head; what a reward is (the head's output at the last token) is in train/preference.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.infer.load import load_run


class RewardScorer:
    """A trained reward run, loaded once: call it with a conversation's messages to get its reward."""

    def __init__(self, run_dir: Path) -> None:
        self.model, self.tokenizer, self.template = load_run(run_dir, head="reward")

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
                raise LmforgeError(f'{path}:{n}: expected a JSON object with a "messages" list ({err})') from None
            scores.append(scorer(messages))
    return scores
