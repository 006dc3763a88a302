"""The quickstart's preference extension: a reward model and DPO on top of the quickstart's SFT model.

Preference data comes from the same generator: every assistant turn of a chat becomes a pair whose
prompt is the conversation before it, the chosen reply the correct one ("7 times 6 is 42.") and
the rejected reply the same sentence with a wrong number ("7 times 6 is 44."). Train pairs come from
the training chats, held-out pairs from the held-out chats.

Figures: the reward model's held-out pairwise accuracy (r_chosen > r_rejected) and mean margin; for
DPO, the held-out preference for correct answers, the share of pairs with log p(chosen) - log p(rejected)
> 0 and the mean of that margin, for the SFT model it starts from and for the DPO model.

    python -m lmforge.quickstart.preference [--workdir runs/quickstart] [--quick]

needs a finished `lmforge quickstart` in WORKDIR (its data and sft run).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.quickstart import synth

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPES = {"rm": "quickstart_rm.yaml", "dpo": "quickstart_dpo.yaml"}
DEFAULT_WORKDIR = Path("runs/quickstart")
QUICK_STEPS = 20
_ANSWER = re.compile(r"^(.* is )(-?\d+)\.$")


def wrong_reply(reply: str, rng: random.Random) -> str:
    """The same sentence with another number: '7 times 6 is 42.' -> '7 times 6 is 44.'."""
    match = _ANSWER.match(reply)
    if match is None:
        raise LmforgeError(f"quickstart: cannot find the answer in {reply!r}; expected 'A op B is N.'")
    number = int(match.group(2))
    return f"{match.group(1)}{number + rng.choice((-3, -2, -1, 1, 2, 3))}."


def preference_pairs(chats: list[list[dict]], seed: int = 0) -> list[dict]:
    """One {"prompt": messages, "chosen": reply, "rejected": reply} per assistant turn of each chat."""
    rng = random.Random(seed)
    return [{"prompt": prompt, "chosen": reply, "rejected": wrong_reply(reply, rng)}
            for prompt, reply in synth.questions(chats)]


def write_preference_data(data_dir: Path, seed: int = 0) -> dict[str, Path]:
    """pref.jsonl (from the training chats) and pref_heldout.jsonl (from the held-out chats) in data_dir."""
    out = {"train": data_dir / "pref.jsonl", "heldout": data_dir / "pref_heldout.jsonl"}
    for split, source in (("train", "sft.jsonl"), ("heldout", "heldout.jsonl")):
        rows = preference_pairs(synth.read_chats(data_dir / source), seed)
        out[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def reward_accuracy(run_dir: Path, pairs: list[dict]) -> dict[str, float]:
    """Held-out pairwise accuracy and mean margin r(chosen) - r(rejected) of a reward run."""
    from lmforge.train.reward import RewardScorer

    scorer = RewardScorer(run_dir)
    margins = [scorer([*p["prompt"], _reply(p["chosen"])]) - scorer([*p["prompt"], _reply(p["rejected"])])
               for p in pairs]
    return _summary(margins)


@torch.no_grad()
def preference_for_correct(run_dir: Path, pairs: list[dict]) -> dict[str, float]:
    """Share of pairs where the policy gives the correct reply a higher log-probability, and the mean margin."""
    from lmforge.data.pairs import encode_pair
    from lmforge.data.records import Message, PreferencePair
    from lmforge.infer.chat import load_run
    from lmforge.train.preference import PairCollator
    from lmforge.train.preference_losses import sequence_logps

    model, tokenizer, template = load_run(run_dir)
    collate = PairCollator(tokenizer.pad_token_id)
    margins = []
    for p in pairs:
        pair = PreferencePair([Message(m["role"], m["content"]) for m in p["prompt"]],
                              Message("assistant", p["chosen"]), Message("assistant", p["rejected"]))
        chosen, rejected = encode_pair(tokenizer, template, pair, 4096).sides
        batch = collate([{"chosen_input_ids": chosen.input_ids, "chosen_labels": chosen.labels,
                          "rejected_input_ids": rejected.input_ids, "rejected_labels": rejected.labels}])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sums = sequence_logps(logits, batch["labels"])[0]
        margins.append(float(sums[0] - sums[1]))
    return _summary(margins)


def _reply(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _summary(margins: list[float]) -> dict[str, float]:
    n = max(len(margins), 1)
    return {"pairs": len(margins), "accuracy": round(sum(m > 0 for m in margins) / n, 4),
            "mean_margin": round(sum(margins) / n, 4)}


def run_preference_quickstart(workdir: Path = DEFAULT_WORKDIR, quick: bool = False) -> dict[str, Any]:
    """Write the preference data, train the reward model and DPO from WORKDIR/sft, and report the figures."""
    from lmforge.config.load import load_recipe
    from lmforge.train.run import run_training

    workdir = Path(workdir)
    if not (workdir / "sft").is_dir() or not (workdir / "data" / "heldout.jsonl").is_file():
        raise LmforgeError(f"{workdir} holds no finished quickstart (sft/ and data/heldout.jsonl); run "
                           f"`lmforge quickstart --workdir {workdir}` first")
    files = write_preference_data(workdir / "data")
    heldout = [json.loads(line) for line in files["heldout"].read_text().splitlines()]
    runs = {}
    for stage in ("rm", "dpo"):
        overrides = [f"model.path={workdir / 'sft'}", f"data.train.0.path={files['train']}",
                     f"data.eval.path={files['heldout']}", f"output={workdir / stage}"]
        if quick:
            overrides += [f"train.max_steps={QUICK_STEPS}", f"train.save_every={QUICK_STEPS}", "train.log_every=5"]
        print(f"lmforge train examples/{RECIPES[stage]} {' '.join(overrides)} --overwrite", flush=True)
        runs[stage] = run_training(load_recipe(EXAMPLES / RECIPES[stage], overrides), overwrite=True)
    figures = {"heldout_pairs": len(heldout),
               "reward_model": reward_accuracy(runs["rm"], heldout),
               "preference_for_correct": {"sft": preference_for_correct(workdir / "sft", heldout),
                                          "dpo": preference_for_correct(runs["dpo"], heldout)}}
    (workdir / "preference_results.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    _print(figures)
    return figures


def _print(figures: dict[str, Any]) -> None:
    rm, pref = figures["reward_model"], figures["preference_for_correct"]
    print(f"\npreference results on {figures['heldout_pairs']} held-out pairs (correct vs wrong number)")
    print(f"  reward model: pairwise accuracy {rm['accuracy']:.1%}, mean margin {rm['mean_margin']:.3f}")
    for name in ("sft", "dpo"):
        print(f"  {name:<4} log p(correct) > log p(wrong): {pref[name]['accuracy']:.1%}, "
              f"mean margin {pref[name]['mean_margin']:.3f} nats")


def main() -> None:
    parser = argparse.ArgumentParser(description="Reward model and DPO on top of the quickstart's SFT model.")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps per stage, for a smoke test")
    args = parser.parse_args()
    run_preference_quickstart(args.workdir, quick=args.quick)


if __name__ == "__main__":
    main()
