"""`lmforge quickstart`: the embedded default, from nothing to a fine-tuned chat model on CPU.

1. write a synthetic arithmetic task (plain text and chats) under WORKDIR/data
2. train a tokenizer and build a tiny random model (WORKDIR/tokenizer, WORKDIR/base)
3. pretrain on the text:      lmforge train examples/quickstart_pt.yaml
4. fine-tune on the chats:    lmforge train examples/quickstart_sft.yaml
5. score both models on held-out questions (`lmforge eval`'s generation task, written to WORKDIR/eval) and
   show sample chats

Progress lines go to stderr (console.say); the sample chats and the results table, the command's result, to
stdout. `lmforge quickstart --preference` then continues with a reward model and DPO (preference.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.quickstart import assets, evaluate, synth

DEFAULT_WORKDIR = Path("runs/quickstart")
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RECIPES = {"pt": "quickstart_pt.yaml", "sft": "quickstart_sft.yaml"}
# quick=True: the same pipeline in about a minute, for tests; the figures then mean little.
QUICK = {"steps": {"pt": 30, "sft": 30}, "chats": 400, "docs": 300, "questions": 12}
SAMPLE_CHATS = 2


def run_quickstart(workdir: Path = DEFAULT_WORKDIR, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the five steps and return the figures (also written to WORKDIR/results.json)."""
    quiet_progress_bars()
    workdir = Path(workdir)
    clock: dict[str, float] = {}
    started = time.perf_counter()

    say(f"[1/5] synthetic task -> {workdir / 'data'}")
    task = synth.make_task(seed, train_chats=QUICK["chats"], docs=QUICK["docs"]) if quick else synth.make_task(seed)
    files = synth.write_task(task, workdir / "data")
    questions = synth.questions(task.heldout_chats)
    questions = questions[: QUICK["questions"]] if quick else questions
    say(
        f"      {len(task.texts)} text documents, {len(task.train_chats)} training chats, "
        f"{len(task.heldout_chats)} held-out chats ({len(questions)} questions in chats not in the training data)"
    )

    say(f"[2/5] tokenizer and tiny model -> {workdir / 'tokenizer'}, {workdir / 'base'}")
    assets.build_tokenizer(workdir / "tokenizer", seed=seed)
    assets.build_base_model(workdir / "base", workdir / "tokenizer", seed=seed)
    clock["setup"] = time.perf_counter() - started

    runs = {}
    for step, stage, base in ((3, "pt", workdir / "base"), (4, "sft", workdir / "pt")):
        what = "pretrain on the text" if stage == "pt" else "fine-tune on the chats"
        t0 = time.perf_counter()
        runs[stage] = _train(step, what, stage, workdir, base, files[stage], quick)
        clock[stage] = time.perf_counter() - t0

    task_file = evaluate.write_heldout_task(questions, workdir / "eval")
    say(f"[5/5] evaluate on {len(questions)} held-out questions: lmforge eval {runs['sft']} --tasks {task_file}")
    t0 = time.perf_counter()
    results, samples = _evaluate(runs, task_file, task.heldout_chats[:SAMPLE_CHATS])
    clock["eval"] = time.perf_counter() - t0
    clock["total"] = time.perf_counter() - started

    figures = {
        "workdir": str(workdir),
        "questions": len(questions),
        "task": str(task_file),
        **results,
        "seconds": {k: round(v, 1) for k, v in clock.items()},
    }
    (workdir / "results.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    _print_results(figures, samples, runs)
    return figures


def quiet_progress_bars() -> None:
    """transformers' weight loading and saving bars would drown the quickstart's progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def example_recipe(name: str) -> Path:
    """A quickstart recipe in examples/, which sits beside src/ in a source checkout."""
    path = EXAMPLES / name
    if not path.is_file():
        raise LmforgeError(
            f"{path} is missing; the quickstart runs from a source checkout of lmforge (pip install -e .), where "
            "examples/ sits beside src/"
        )
    return path


def _train(step: int, what: str, stage: str, workdir: Path, model_path: Path, data: Path, quick: bool) -> Path:
    from lmforge.config.load import load_recipe
    from lmforge.train.run import run_training

    recipe_path = example_recipe(RECIPES[stage])
    overrides = []
    if workdir != DEFAULT_WORKDIR:
        overrides += [f"model.path={model_path}", f"data.train.0.path={data}", f"output={workdir / stage}"]
    if quick:
        steps = QUICK["steps"][stage]
        overrides += [f"train.max_steps={steps}", f"train.save_every={steps}", "train.log_every=10"]
    shown = " ".join([f"examples/{RECIPES[stage]}", *overrides, "--overwrite"])
    say(f"[{step}/5] {what}: lmforge train {shown}")
    return run_training(load_recipe(recipe_path, overrides), overwrite=True)


def _evaluate(runs: dict[str, Path], task_file: Path, sample_chats) -> tuple[dict[str, Any], list]:
    """Each run's figures on the held-out task (lmforge eval's code), and the (speaker, text) lines of each sample
    chat."""
    from lmforge.infer.load import load_run

    names = {"pretrained": runs["pt"], "fine-tuned": runs["sft"]}
    loaded = {name: load_run(path) for name, path in names.items()}
    scores = evaluate.score_runs(loaded, task_file)
    results: dict[str, Any] = {
        name: {"run": str(names[name]), **{key: round(scores[name][key], 4) for key in evaluate.SCORERS}}
        for name in names
    }
    return results, [evaluate.sample_chat(loaded, chat) for chat in sample_chats]


def _print_results(figures: dict[str, Any], samples: list[list[tuple[str, str]]], runs: dict[str, Path]) -> None:
    """The sample chats and the results table, on stdout."""
    lines = []
    for i, chat in enumerate(samples, 1):
        lines += [f"\nsample chat {i} (held out):", *(f"  {speaker + ':':<12} {text}" for speaker, text in chat)]
    s = figures["seconds"]
    lines += [
        f"\nquickstart results: {figures['questions']} held-out questions",
        f"  {'model':<12} {'exact reply':>12} {'final number':>13}  run",
    ]
    for name in ("pretrained", "fine-tuned"):
        r = figures[name]
        lines.append(f"  {name:<12} {r['exact']:>12.1%} {r['final_number']:>13.1%}  {r['run']}")
    lines += [
        f"  time: set-up {s['setup']:.0f}s, pretrain {s['pt']:.0f}s, fine-tune {s['sft']:.0f}s, "
        f"evaluation {s['eval']:.0f}s, total {s['total']:.0f}s",
        f"\nthe same figures: lmforge eval {runs['sft']} --tasks {figures['task']}",
        f"chat with the fine-tuned model: lmforge chat {runs['sft']}",
    ]
    print("\n".join(lines), flush=True)
