"""SFT throughput and memory: lmforge vs TRL's SFTTrainer vs LLaMA-Factory, each in its own process and env.

    python bench/sft_throughput.py            # the figures of record (quiet machine, ~30 min on 2 cores)
    python bench/sft_throughput.py --quick    # a smoke run, < 5 min on 2 cores

Every framework trains the same tiny Llama (fp32, SDPA, full fine-tuning, no gradient checkpointing)
on the same chat data for one epoch, with the same batch size, max_length, learning rate and thread
count, the loss on the assistant replies only. Modes: lmforge unpacked / packed (data.packing) / packed
with lmforge_varlen (varlen), TRL unpacked / packing (best-fit decreasing), LLaMA-Factory unpacked /
neat_packing.

Trained tokens/s = the loss-bearing tokens of the data (counted once, with the bench tokenizer, from
the template's assistant mask) / the Trainer's train_runtime; every mode trains each sample exactly
once (nothing is truncated: the data fits max_length), so the numerator is the same for all.
Samples/s = conversations / train_runtime. Peak RSS: the whole process tree, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LR = 1e-4
SEED = 0
LOG_EVERY = 10
LMFORGE = "lmforge"
NEEDS_PACKING = "n/a (needs data.packing)"


@dataclass
class Setting:
    conversations: int
    max_length: int
    batch_size: int
    epochs: float
    threads: int


@dataclass
class Result:
    framework: str
    mode: str
    train_s: float | None = None
    steps: int | None = None
    peak_rss: int | None = None
    wall_s: float | None = None
    own_trained_tokens: int | None = None  # the framework's own count, where it gives one (a cross-check)
    note: str = ""


# ---------------------------------------------------------------- lmforge


def lmforge_packs_sft() -> bool:
    """Whether this lmforge packs SFT samples (data.packing for sft): a tiny build_examples probe."""
    probe = (
        "import json, sys, tempfile, pathlib\n"
        "from lmforge.config.recipe import Recipe\n"
        "from lmforge.config.settings import data_settings\n"
        "from lmforge.data.build.pipeline import build_examples\n"
        "from lmforge.model.load import load_tokenizer, run_template\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "msgs = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello there'}]\n"
        "(d / 'c.jsonl').write_text('\\n'.join(json.dumps({'messages': msgs}) for _ in range(4)))\n"
        "r = Recipe(stage='sft', model={'path': sys.argv[1]}, output=str(d / 'out'),\n"
        "           data={'train': [{'path': str(d / 'c.jsonl')}], 'max_length': 64, 'packing': True,\n"
        "                 'cache': False})\n"
        "tok = load_tokenizer(r.model)\n"
        "b = build_examples(data_settings(r, run_template(r.model, r.stage, tok)), tok)\n"
        "sys.exit(0 if len(b.train) < 4 and 'position_ids' in b.train[0] else 3)\n"
    )
    got = subprocess.run(
        [str(common.MAIN_PY), "-c", probe, str(common.model_dir())],
        capture_output=True,
        text=True,
        env=common.bench_env(1),
    )
    return got.returncode == 0


def run_lmforge(s: Setting, data: common.ChatData, model: Path, packed: bool, work: Path, attn: str = "sdpa") -> Result:
    mode = ("packed" if packed else "unpacked") + ("" if attn == "sdpa" else f" {attn}")
    res = Result(LMFORGE, mode)
    if packed and not lmforge_packs_sft():
        res.note = NEEDS_PACKING
        return res
    out = work / f"lmforge-{mode.replace(' ', '-')}"
    recipe = {
        "stage": "sft",
        "model": {"path": str(model), "dtype": "fp32", "attn_implementation": attn},
        "tuning": {"method": "full"},
        "data": {
            "train": [{"path": str(data.path)}],
            "max_length": s.max_length,
            "packing": packed,
            "cache": False,
            "workers": s.threads,
        },
        "train": {
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "lr": LR,
            "scheduler": "cosine",
            "warmup": 0,
            "save_every": 10**9,
            "keep": 1,
            "log_every": LOG_EVERY,
            "seed": SEED,
        },
        "output": str(out),
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    lmforge_cli = common.MAIN_PY.parent / "lmforge"
    ran = common.run_watched(
        [str(lmforge_cli), "train", str(path), "--overwrite"], out.with_suffix(".log"), common.bench_env(s.threads)
    )
    return _finish(res, ran, out / "metrics.json", lambda m: m.get("trained_tokens"))


# ---------------------------------------------------------------- TRL


def run_trl(s: Setting, data: common.ChatData, model: Path, packed: bool, work: Path) -> Result:
    mode = "packing" if packed else "unpacked"
    res = Result("TRL", mode)
    py = common.trl_python()
    if py is None:
        res.note = "n/a (run bench/setup.sh)"
        return res
    metrics = work / f"trl-{mode}.json"
    cmd = [
        str(py),
        str(common.BENCH / "trl_sft.py"),
        "--model",
        str(model),
        "--data",
        str(data.path),
        "--out",
        str(work / f"trl-{mode}"),
        "--metrics",
        str(metrics),
        "--max-length",
        str(s.max_length),
        "--batch-size",
        str(s.batch_size),
        "--epochs",
        str(s.epochs),
        "--lr",
        str(LR),
        "--seed",
        str(SEED),
    ]
    ran = common.run_watched(
        cmd + (["--packing"] if packed else []), work / f"trl-{mode}.log", common.bench_env(s.threads)
    )
    return _finish(res, ran, metrics, lambda m: m.get("trained_tokens_in_data"))


# ---------------------------------------------------------------- LLaMA-Factory


def run_lf(s: Setting, data: common.ChatData, model: Path, packed: bool, work: Path) -> Result:
    mode = "neat_packing" if packed else "unpacked"
    res = Result("LLaMA-Factory", mode)
    py = common.lf_python()
    if py is None:
        res.note = "n/a (run bench/setup.sh)"
        return res
    dataset_dir = common.write_lf_dataset_info(work, data.path)
    out = work / f"lf-{mode}"
    config = lf_config(model, dataset_dir, out, s, packed)
    path = work / f"lf-{mode}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cli = py.parent / "llamafactory-cli"
    ran = common.run_watched([str(cli), "train", str(path)], work / f"lf-{mode}.log", common.bench_env(s.threads))
    return _finish(res, ran, out / "train_results.json", lambda m: None)


def lf_config(model: Path, dataset_dir: Path, out: Path, s: Setting, packed: bool) -> dict:
    return {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": "bench_chat",
        "dataset_dir": str(dataset_dir),
        "template": common.LF_TEMPLATE,
        "cutoff_len": s.max_length,
        "overwrite_cache": True,
        "preprocessing_num_workers": s.threads,
        "packing": packed,
        "neat_packing": packed,
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "save_strategy": "no",
        "plot_loss": False,
        "report_to": "none",
        "logging_steps": LOG_EVERY,
        "disable_tqdm": True,
        "per_device_train_batch_size": s.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": LR,
        "num_train_epochs": s.epochs,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "seed": SEED,
        "bf16": False,
        "fp16": False,
        "flash_attn": "sdpa",
        "disable_gradient_checkpointing": True,
        "dataloader_num_workers": 0,
    }


# ---------------------------------------------------------------- measuring and the table


def _finish(res: Result, ran: common.Ran, metrics_path: Path, own_tokens) -> Result:
    res.peak_rss, res.wall_s = ran.peak_rss, ran.wall_s
    if ran.returncode != 0 or not metrics_path.is_file():
        res.note = f"failed (exit {ran.returncode}; see {ran.log})"
        common.say(f"bench: {res.framework} {res.mode} failed; last lines of {ran.log}:\n{common.tail(ran.log)}")
        return res
    m = json.loads(metrics_path.read_text())
    res.train_s = float(m["train_runtime"])
    res.steps = m.get("steps") or round(res.train_s * float(m.get("train_steps_per_second", 0)))
    res.own_trained_tokens = own_tokens(m)
    return res


def table(results: list[Result], data: common.ChatData, s: Setting) -> None:
    trained = data.trained_tokens * s.epochs
    rows = []
    for r in results:
        if r.train_s is None:
            rows.append([f"{r.framework} {r.mode}", r.note, "", "", "", "", "", ""])
            continue
        own = "" if r.own_trained_tokens is None else f"{r.own_trained_tokens:,}"
        rows.append(
            [
                f"{r.framework} {r.mode}",
                f"{trained / r.train_s:,.0f}",
                f"{data.conversations * s.epochs / r.train_s:,.2f}",
                common.fmt_mib(r.peak_rss),
                f"{r.train_s:,.1f}",
                f"{r.wall_s:,.1f}",
                str(r.steps or ""),
                own,
            ]
        )
    common.print_table(
        ["framework mode", "trained tok/s", "samples/s", "peak RSS", "train s", "wall s", "steps", "own count"], rows
    )
    print(
        f"\ndata: {data.conversations:,} conversations, {data.tokens:,} tokens, {data.trained_tokens:,} "
        f"trained; max_length {s.max_length}, batch {s.batch_size}, epochs {s.epochs:g}, threads {s.threads}"
    )
    ratios(results, trained)


def fastest(runs: list[Result]) -> Result:
    """The fastest finished run, with the highest peak RSS of all runs (memory does not vary by luck)."""
    done = [r for r in runs if r.train_s is not None]
    if not done:
        return runs[-1]
    top = min(done, key=lambda r: r.train_s)
    top.peak_rss = max(r.peak_rss for r in done)
    return top


def best(results: list[Result], framework: str) -> Result | None:
    done = [r for r in results if r.framework == framework and r.train_s]
    return min(done, key=lambda r: r.train_s) if done else None


def ratios(results: list[Result], trained: float) -> None:
    ours = best(results, LMFORGE)
    if ours is None:
        print("lmforge did not finish: no ratios")
        return
    for peer in ("TRL", "LLaMA-Factory"):
        theirs = best(results, peer)
        if theirs is None:
            print(f"lmforge best ({ours.mode}) vs {peer}: n/a")
            continue
        speed = (trained / ours.train_s) / (trained / theirs.train_s)
        memory = ours.peak_rss / theirs.peak_rss
        print(
            f"lmforge best ({ours.mode}) vs {peer} best ({theirs.mode}): {speed:.2f}x trained tokens/s, "
            f"{memory:.2f}x peak RSS"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke settings: < 5 min on 2 cores")
    p.add_argument("--conversations", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int, help="default 8 (--quick: 4)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=common.os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=1, help="runs of each mode; the table keeps the fastest")
    p.add_argument("--only", default="lmforge,trl,lf", help="comma-separated subset of lmforge, trl, lf")
    p.add_argument(
        "--modes",
        default="unpacked,packed,varlen",
        help="comma-separated subset of unpacked, packed, varlen (lmforge only: packed with lmforge_varlen)",
    )
    a = p.parse_args(argv)
    s = Setting(
        conversations=a.conversations or (32 if a.quick else 400),
        max_length=a.max_length or (256 if a.quick else 1024),
        batch_size=a.batch_size or (4 if a.quick else 8),
        epochs=a.epochs,
        threads=a.threads,
    )
    model = common.model_dir()
    data = common.chat_data(s.conversations, s.max_length, seed=SEED)
    work = common.WORK / "sft" / ("quick" if a.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    runners = {"lmforge": run_lmforge, "trl": run_trl, "lf": run_lf}
    results = []
    for name in a.only.split(","):
        for mode in a.modes.split(","):
            if mode == "varlen" and name != "lmforge":
                continue
            runs = []
            for i in range(a.repeats):
                common.say(f"bench: {name} {mode} ({i + 1}/{a.repeats}) ...")
                if mode == "varlen":  # lmforge packed with lmforge_varlen: padding-free, SDPA per sample on CPU
                    r = run_lmforge(s, data, model, True, work, attn="lmforge_varlen")
                else:
                    r = runners[name](s, data, model, mode == "packed", work)
                common.say(f"bench: {name} {mode}: " + (f"{r.train_s:.1f}s training" if r.train_s else r.note))
                runs.append(r)
                if r.train_s is None:
                    break
            results.append(fastest(runs))
    table(results, data, s)
    (work / "results.json").write_text(json.dumps([vars(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
