"""The quickstart's preference extension: a reward model and DPO on top of the quickstart's SFT model.

Preference data comes from the same generator and from the SFT model itself: every assistant turn of
a chat becomes a pair whose prompt is the conversation before it and whose chosen reply is the
correct one ("7 times 6 is 42."). The rejected reply is the SFT model's own greedy reply where that
is wrong (its real mistakes: the negatives DPO has to push down), else the correct sentence with a
nearby wrong number ("7 times 6 is 44."). Train pairs come from the training chats, held-out pairs
from the held-out chats.

Figures: the reward model's held-out pairwise accuracy (r_chosen > r_rejected) and mean margin; for
the SFT model DPO starts from and for the DPO model, the held-out preference for correct answers
(the share of pairs with log p(chosen) - log p(rejected) > 0, and the mean of that margin) and the
exact-match accuracy of their greedy replies to the held-out questions. The pair figures are given overall and
by kind of rejected reply (the SFT model's own mistake, a nearby wrong number): see `summary`.

    lmforge quickstart --preference [--workdir runs/quickstart] [--quick]

needs a finished `lmforge quickstart` in WORKDIR (its data and sft run). Progress goes to stderr, the
figures to stdout.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.quickstart import synth
from lmforge.quickstart.run import DEFAULT_WORKDIR, example_recipe, quiet_progress_bars

RECIPES = {"rm": "quickstart_rm.yaml", "dpo": "quickstart_dpo.yaml"}
QUICK_STEPS = 20
_ANSWER = re.compile(r"^(.* is )(-?\d+)\.$")
KINDS = {"model_mistakes": True, "nearby_numbers": False}  # figures by kind of rejected reply (pair["model_mistake"])


def wrong_reply(reply: str, rng: random.Random) -> str:
    """The same sentence with another number: '7 times 6 is 42.' -> '7 times 6 is 44.'."""
    match = _ANSWER.match(reply)
    if match is None:
        raise LmforgeError(f"quickstart: cannot find the answer in {reply!r}; expected 'A op B is N.'")
    number = int(match.group(2))
    return f"{match.group(1)}{number + rng.choice((-3, -2, -1, 1, 2, 3))}."


def preference_pairs(chats: list[list[dict]], seed: int = 0, replies: list[str] | None = None) -> list[dict]:
    """One {"prompt": messages, "chosen": reply, "rejected": reply} per assistant turn of each chat.

    replies: a model's reply to each question (synth.questions order); a wrong one becomes the rejected
    reply, a right (or missing) one is replaced by the correct sentence with a nearby wrong number.
    """
    rng = random.Random(seed)
    asked = synth.questions(chats)
    replies = replies if replies is not None else [None] * len(asked)
    pairs = []
    for (prompt, correct), reply in zip(asked, replies, strict=True):
        own = bool(reply) and reply != correct
        pairs.append(
            {
                "prompt": prompt,
                "chosen": correct,
                "rejected": reply if own else wrong_reply(correct, rng),
                "model_mistake": own,
            }
        )
    return pairs


def model_replies(run_dir: Path, chats: list[list[dict]]) -> list[str]:
    """The greedy reply of a trained run to every question of `chats` (synth.questions order)."""
    from lmforge.infer.chat import generate_replies
    from lmforge.infer.load import load_run
    from lmforge.quickstart.evaluate import MAX_NEW_TOKENS

    model, tokenizer, template = load_run(run_dir)
    prompts = [prompt for prompt, _ in synth.questions(chats)]
    return generate_replies(model, tokenizer, template, prompts, max_new_tokens=MAX_NEW_TOKENS)


@dataclass
class PreferenceData:
    files: dict[str, Path]  # "train" -> pref.jsonl, "heldout" -> pref_heldout.jsonl
    pairs: dict[str, list[dict]]  # what each file holds


def write_preference_data(data_dir: Path, sft_dir: Path | None = None, seed: int = 0) -> PreferenceData:
    """pref.jsonl (from the training chats) and pref_heldout.jsonl (from the held-out chats) in data_dir.

    With sft_dir, the rejected replies include that model's own mistakes (see `preference_pairs`).
    """
    data = PreferenceData({"train": data_dir / "pref.jsonl", "heldout": data_dir / "pref_heldout.jsonl"}, {})
    for split, source in (("train", "sft.jsonl"), ("heldout", "heldout.jsonl")):
        chats = synth.read_chats(data_dir / source)
        replies = model_replies(sft_dir, chats) if sft_dir is not None else None
        rows = data.pairs[split] = preference_pairs(chats, seed, replies)
        data.files[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return data


def reward_accuracy(run_dir: Path, pairs: list[dict]) -> dict[str, Any]:
    """Held-out pairwise accuracy and mean margin r(chosen) - r(rejected) of a reward run (see `summary`)."""
    from lmforge.infer.score import RewardScorer

    scorer = RewardScorer(run_dir)
    margins = [
        scorer([*p["prompt"], _reply(p["chosen"])]) - scorer([*p["prompt"], _reply(p["rejected"])]) for p in pairs
    ]
    return summary(pairs, margins)


@torch.no_grad()
def preference_for_correct(run_dir: Path, pairs: list[dict]) -> dict[str, Any]:
    """Share of pairs where the policy gives the correct reply a higher log-probability, and the mean margin
    (see `summary`)."""
    from lmforge.data.build.encode import EncodeSettings, encode_samples
    from lmforge.data.records import Message, PreferencePair
    from lmforge.infer.load import load_run
    from lmforge.train.preference import PairCollator
    from lmforge.train.preference_losses import sequence_logps

    model, tokenizer, template = load_run(run_dir)
    collate = PairCollator(tokenizer.pad_token_id)
    records = [
        PreferencePair(
            [Message(m["role"], m["content"]) for m in p["prompt"]],
            Message("assistant", p["chosen"]),
            Message("assistant", p["rejected"]),
        )
        for p in pairs
    ]
    margins = []
    for outcome in encode_samples(tokenizer, records, EncodeSettings("preference", template, 4096)):
        if isinstance(outcome, LmforgeError):
            raise outcome
        chosen, rejected = outcome[0].sides
        batch = collate(
            [
                {
                    "chosen_input_ids": chosen.input_ids,
                    "chosen_labels": chosen.labels,
                    "rejected_input_ids": rejected.input_ids,
                    "rejected_labels": rejected.labels,
                }
            ]
        )
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sums = sequence_logps(logits, batch["labels"])[0]
        margins.append(float(sums[0] - sums[1]))
    return summary(pairs, margins)


def _reply(text: str) -> dict:
    return {"role": "assistant", "content": text}


def summary(pairs: list[dict], margins: list[float]) -> dict[str, Any]:
    """Accuracy (share of margins > 0) and mean margin over all pairs, then over each kind of rejected reply.

    The two kinds test different things: against the model's own mistakes (mostly a restated question
    that does not match the one asked) and against a nearby wrong number (the arithmetic itself). The
    SFT model's own preference is low on the first by construction (they are its greedy replies)."""
    if len(pairs) != len(margins):
        raise ValueError(f"summary: {len(pairs)} pairs but {len(margins)} margins")
    figures: dict[str, Any] = _summary(margins)
    for kind, own in KINDS.items():
        figures[kind] = _summary([m for p, m in zip(pairs, margins) if p["model_mistake"] == own])
    return figures


def _summary(margins: list[float]) -> dict[str, float]:
    n = max(len(margins), 1)
    return {
        "pairs": len(margins),
        "accuracy": round(sum(m > 0 for m in margins) / n, 4),
        "mean_margin": round(sum(margins) / n, 4),
    }


def run_preference_quickstart(workdir: Path = DEFAULT_WORKDIR, quick: bool = False) -> dict[str, Any]:
    """Write the preference data, train the reward model and DPO from WORKDIR/sft, and report the figures."""
    from lmforge.config.load import load_recipe
    from lmforge.infer.load import load_run
    from lmforge.quickstart.evaluate import score_runs, write_heldout_task
    from lmforge.train.run import run_training

    quiet_progress_bars()
    workdir = Path(workdir)
    if not (workdir / "sft").is_dir() or not (workdir / "data" / "heldout.jsonl").is_file():
        raise LmforgeError(
            f"{workdir} holds no finished quickstart (sft/ and data/heldout.jsonl); run "
            f"`lmforge quickstart --workdir {workdir}` first"
        )
    say("preference data: the SFT model answers every question; its wrong answers become rejected replies")
    data = write_preference_data(workdir / "data", sft_dir=workdir / "sft")
    files, train, heldout = data.files, data.pairs["train"], data.pairs["heldout"]
    runs = {}
    for stage in ("rm", "dpo"):
        overrides = [
            f"model.path={workdir / 'sft'}",
            f"data.train.0.path={files['train']}",
            f"data.eval.path={files['heldout']}",
            f"output={workdir / stage}",
        ]
        if quick:
            overrides += [f"train.max_steps={QUICK_STEPS}", f"train.save_every={QUICK_STEPS}", "train.log_every=5"]
        say(f"lmforge train examples/{RECIPES[stage]} {' '.join(overrides)} --overwrite")
        runs[stage] = run_training(load_recipe(example_recipe(RECIPES[stage]), overrides), overwrite=True)
    questions = [(p["prompt"], p["chosen"]) for p in heldout]  # every held-out question with its correct reply
    task = write_heldout_task(questions, workdir / "eval", name="preference_heldout", scorers=("exact",))
    scored = score_runs({"sft": load_run(workdir / "sft"), "dpo": load_run(runs["dpo"])}, task)
    figures = {
        "heldout_pairs": len(heldout),
        "model_mistakes": {
            "train": sum(p["model_mistake"] for p in train),
            "heldout": sum(p["model_mistake"] for p in heldout),
        },
        "reward_model": reward_accuracy(runs["rm"], heldout),
        "preference_for_correct": {
            "sft": preference_for_correct(workdir / "sft", heldout),
            "dpo": preference_for_correct(runs["dpo"], heldout),
        },
        "exact_match": {name: round(scores["exact"], 4) for name, scores in scored.items()},
    }
    (workdir / "preference_results.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    _print(figures)
    return figures


def _print(figures: dict[str, Any]) -> None:
    rm, pref, exact = figures["reward_model"], figures["preference_for_correct"], figures["exact_match"]
    mistakes = figures["model_mistakes"]
    print(
        f"\npreference results on {figures['heldout_pairs']} held-out pairs (correct vs wrong answer; "
        f"{mistakes['heldout']} of the wrong ones are the SFT model's own, {mistakes['train']} in training)"
    )
    print(f"  reward model: pairwise accuracy {rm['accuracy']:.1%}{_kinds(rm)}, mean margin {rm['mean_margin']:.3f}")
    for name in ("sft", "dpo"):
        print(
            f"  {name:<4} log p(correct) > log p(wrong): {pref[name]['accuracy']:.1%}{_kinds(pref[name])}, "
            f"mean margin {pref[name]['mean_margin']:.3f} nats; greedy replies exactly right: {exact[name]:.1%}"
        )


def _kinds(figures: dict[str, Any]) -> str:
    """The figure by kind of rejected reply, leaving out a kind with no pairs (an SFT model that made no mistakes)."""
    names = {"model_mistakes": "the SFT model's mistakes", "nearby_numbers": "a nearby number"}
    parts = [
        f"against {names[kind]} {figures[kind]['accuracy']:.1%} of {figures[kind]['pairs']}"
        for kind in KINDS
        if figures[kind]["pairs"]
    ]
    return f" ({', '.join(parts)})" if parts else ""
