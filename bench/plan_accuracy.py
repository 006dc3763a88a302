"""How close `lmforge plan`'s memory estimate comes to the measured peak of real training steps, on this CPU.

For each configuration (full / LoRA / DoRA / freeze, with and without activation checkpointing and LoRA
dropout, packed, the model's own loss, pt, sft and dpo, three model sizes) it trains two optimizer steps
through lmforge's own trainer and measures the peak of the second step (the first allocates the optimizer
states, so the second is the steady one):

- the bytes held when the step begins: every live tensor's storage, each once (weights, optimizer states,
  the reference copy), found through the garbage collector;
- plus the highest point of torch.profiler's memory events during the step (profile_memory=True): every
  allocation and free of PyTorch's CPU allocator, in order (the trace's memory events).

This counts tensors exactly, as torch.cuda.max_memory_allocated does on a GPU, where the process's resident
set size (RSS) would add the Python heap, libraries and the allocator's cached pages, and move with the other
processes on the machine. Each configuration runs in a process of its own so the profiler's counters start
from zero. The estimate is `lmforge.plan`'s for the same recipe with --gpus 1.

    python bench/plan_accuracy.py            # the table (about a minute on two cores)
    python bench/plan_accuracy.py --only sft-full
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MAX_LENGTH = 128
SMALL = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
# name: (stage, model shape, tuning method, recipe overrides)
CONFIGS = {
    "sft-full": ("sft", "small", "full", {}),
    "sft-full-ckpt": ("sft", "small", "full", {"train.activation_checkpointing": True}),
    "sft-full-ownloss": ("sft", "small", "full", {"train.loss_chunk": "off"}),
    "sft-full-packed": ("sft", "small", "full", {"data.packing": True}),
    "sft-lora": ("sft", "small", "lora", {}),
    "sft-lora-ckpt": ("sft", "small", "lora", {"train.activation_checkpointing": True}),
    "sft-lora-dropout": ("sft", "small", "lora", {"tuning.lora.dropout": 0.05}),
    "sft-dora": ("sft", "small", "dora", {}),
    "sft-freeze": ("sft", "small", "freeze", {"tuning.freeze.layers": 1}),
    "pt-full-packed": ("pt", "small", "full", {"data.packing": True}),
    "sft-tiny-full": ("sft", "tiny", "full", {"train.batch_size": 16}),
    "quickstart-sft": ("sft", "quickstart", "full", {"train.batch_size": 16}),
    "dpo-full": ("dpo", "small", "full", {}),
    "dpo-lora": ("dpo", "small", "lora", {}),
    "dpo-full-precomputed": ("dpo", "small", "full", {"preference.precompute_reference": True}),
}


DATA = {"sft": "chat.jsonl", "dpo": "pairs.jsonl", "pt": "text.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run these configurations only")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.work)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_assets(work)
        rows = []
        for name in args.only or CONFIGS:
            done = subprocess.run(
                [sys.executable, __file__, "--one", name, "--work", str(work)], capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(f"{'configuration':22} {'estimate MiB':>12} {'measured MiB':>12} {'error':>7}")
    for r in rows:
        error = (r["estimate"] - r["measured"]) / r["measured"]
        print(f"{r['name']:22} {r['estimate'] / 2**20:12.1f} {r['measured'] / 2**20:12.1f} {error:+7.1%}")
        terms = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["terms"].items() if v)
        print(f"{'':22} ({terms})")
    worst = max(abs(r["estimate"] - r["measured"]) / r["measured"] for r in rows)
    print(f"largest error {worst:.1%} over {len(rows)} configurations (target: within 15 %)")


def make_assets(work: Path) -> None:
    """The quickstart tokenizer, three model sizes (the quickstart's among them), and chat and pair data whose
    samples all reach max_length."""
    from lmforge.quickstart.assets import build_base_model, build_tokenizer

    build_tokenizer(work / "tokenizer")
    for name, shape in (("small", SMALL), ("tiny", TINY), ("quickstart", None)):
        build_base_model(work / name, work / "tokenizer", shape=shape)
    long_reply = " ".join(f"{k} plus {k + 1} is {2 * k + 1}." for k in range(40))
    with (work / "chat.jsonl").open("w") as f:
        for i in range(64):
            messages = [
                {"role": "user", "content": f"Add the numbers from {i}."},
                {"role": "assistant", "content": long_reply},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    with (work / "text.jsonl").open("w") as f:
        for i in range(64):
            f.write(json.dumps({"text": f"{i}: {long_reply}"}) + "\n")
    with (work / "pairs.jsonl").open("w") as f:
        for i in range(64):
            pair = {"prompt": f"Add the numbers from {i}.", "chosen": long_reply, "rejected": long_reply[::-1]}
            f.write(json.dumps(pair) + "\n")


def recipe_of(name: str, work: Path):
    from lmforge.config.load import validate_recipe

    stage, size, method, overrides = CONFIGS[name]
    raw = {
        "stage": stage,
        "model": {"path": str(work / size), "attn_implementation": "sdpa", "dtype": "fp32"},
        "tuning": {"method": method, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "data": {
            "train": [{"path": str(work / DATA[stage])}],
            "max_length": MAX_LENGTH,
            "cache": False,
        },
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-4, "log_every": 1, "save_every": 100},
        "output": str(work / "runs" / name),
    }
    if overrides.get("data.packing"):
        raw["model"]["attn_implementation"] = "auto"
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return validate_recipe(raw, source=name)


def measure(name: str, work: Path) -> dict:
    """Train two steps of configuration `name`; the second step's peak, and the plan's estimate."""
    from transformers import set_seed

    from lmforge.config.recipe import PREFERENCE_STAGES
    from lmforge.config.settings import data_settings
    from lmforge.data.build.pipeline import build_examples
    from lmforge.model.adapters import apply_tuning
    from lmforge.model.load import load_model, load_tokenizer, run_template
    from lmforge.plan.counts import count_parameters
    from lmforge.plan.memory import estimate
    from lmforge.plan.run import setup_of
    from lmforge.train.collate import Collator
    from lmforge.train.peak import PeakProbe
    from lmforge.train.preference import make_preference_trainer
    from lmforge.train.run import attention_of, training_arguments
    from lmforge.train.trainer import LmforgeTrainer

    recipe = recipe_of(name, work)
    tokenizer = load_tokenizer(recipe.model)
    data = build_examples(data_settings(recipe, run_template(recipe.model, recipe.stage, tokenizer)), tokenizer)
    args = training_arguments(recipe, has_eval=False)
    probe = PeakProbe()  # lmforge's own measurement (train/peak.py), as `lmforge plan --measure` uses
    set_seed(0)
    if recipe.stage in PREFERENCE_STAGES:
        trainer = make_preference_trainer(recipe, tokenizer, data, args, [probe])
    else:
        model = apply_tuning(
            load_model(recipe.model, recipe.tuning, tokenizer, packed=recipe.data.packing), recipe.tuning
        )
        collator = Collator(tokenizer.pad_token_id, attn_implementation=attention_of(model))
        trainer = LmforgeTrainer(
            model=model,
            args=args,
            train_dataset=data.train,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[probe],
            loss_chunk=recipe.train.loss_chunk,
        )
    trainer.train()
    counts = count_parameters(recipe, tokenizer)
    planned = estimate(counts, setup_of(recipe, counts))
    return {"name": name, "estimate": planned.peak, "measured": probe.peak, "terms": planned.terms}


if __name__ == "__main__":
    main()
