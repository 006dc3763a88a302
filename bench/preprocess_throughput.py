"""Preprocessing throughput: lmforge's data pipeline vs LLaMA-Factory's, and lmforge's cached rerun.

    python bench/preprocess_throughput.py            # 100k conversations (quiet machine)
    python bench/preprocess_throughput.py --quick    # 10k conversations, a smoke run

Both frameworks go from the same JSONL file (OpenAI `messages`, long-tail lengths) to tokenised,
assistant-masked examples with the same tokenizer and template and the same number of processes:
- lmforge: `build_examples` with the data cache off (read, encode with the template's masks, truncation
  policy, flat arrays);
- LLaMA-Factory 0.9.5: `get_dataset` as `llamafactory-cli train` calls it (read with `datasets`,
  convert the sharegpt format, tokenise and mask with its `chatml` template), its cache overwritten.
Tokens/s = the tokens each framework produced / its preprocessing seconds (imports and the model load
are outside the timing). Then the cached rerun: LLaMA-Factory's `get_dataset` with `tokenized_path`
(its on-disk cache: one run encodes and saves, the next only loads; its `datasets` map cache is not
reused across processes here), and `lmforge train` twice with the data cache on (a cold cache, then warm): the time from
the process start to the first training step, against the first run's preprocessing time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA_MAX_LENGTH = 1024  # conversations are made to fit this (estimated) ...
CUTOFF = 2048  # ... and encoded with this max_length, so neither framework truncates anything
TRAINING_STARTS = "***** Running training *****"
FIRST_STEP = "step 1/"
DATA_READY = "lmforge: data: cache "  # the cache hit or miss line: the data phase is over
ENCODED = re.compile(r"encoded in ([\d.]+)s")
LOADED = re.compile(r"looked up and loaded in ([\d.]+)s")

# The tokenizer alone: each conversation rendered (outside the timing), then only the Rust tokenizer's encode_batch
# of the texts, in `workers` forked processes: what any framework that tokenises the whole text pays at least.
TOKENIZER_ONLY = """
import json, multiprocessing, sys, time
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = [tok.apply_chat_template(json.loads(line)["messages"], tokenize=False) for line in open(sys.argv[2])]
workers = int(sys.argv[3])
def encode(bounds):
    batch = texts[bounds[0]:bounds[1]]
    return sum(len(e.ids) for e in tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False))
ranges = [(i, i + 512) for i in range(0, len(texts), 512)]
begin = time.perf_counter()
with multiprocessing.get_context("fork").Pool(workers) as pool:
    tokens = sum(pool.imap(encode, ranges))
print(json.dumps({"seconds": time.perf_counter() - begin, "tokens": tokens}), flush=True)
"""


def lmforge_recipe(model: Path, data: Path, out: Path, workers: int, cache_dir: Path | None) -> dict:
    return {
        "stage": "sft",
        "model": {"path": str(model), "dtype": "fp32"},
        "tuning": {"method": "full"},
        "data": {
            "train": [{"path": str(data)}],
            "max_length": CUTOFF,
            "workers": workers,
            "cache": cache_dir is not None,
            **({"cache_dir": str(cache_dir)} if cache_dir else {}),
        },
        "train": {"max_steps": 1, "batch_size": 8, "log_every": 1, "save_every": 10**9, "keep": 1, "seed": 0},
        "output": str(out),
    }


def last_json(log: Path) -> dict | None:
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_lmforge_encode(model: Path, data: Path, work: Path, workers: int) -> dict | None:
    recipe = lmforge_recipe(model, data, work / "lmforge-encode-out", workers, cache_dir=None)
    ran = common.run_watched(
        [str(common.MAIN_PY), "-c", common.LMFORGE_BUILD, json.dumps(recipe)],
        work / "lmforge-encode.log",
        common.bench_env(workers),
    )
    return _result(ran)


def run_tokenizer_only(model: Path, data: Path, work: Path, workers: int) -> dict | None:
    ran = common.run_watched(
        [str(common.MAIN_PY), "-c", TOKENIZER_ONLY, str(model), str(data), str(workers)],
        work / "tokenizer-only.log",
        common.bench_env(workers),
    )
    return _result(ran)


def run_lf_encode(
    model: Path, data: Path, work: Path, workers: int, name: str, tokenized: Path | None = None
) -> dict | None:
    """LLaMA-Factory's get_dataset with its `datasets` cache overwritten; with `tokenized`, its own cache
    (`tokenized_path`: the first run encodes and saves there, a later run only loads)."""
    py = common.lf_python()
    if py is None:
        return None
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": "bench_chat",
        "dataset_dir": str(common.write_lf_dataset_info(work, data)),
        "template": common.LF_TEMPLATE,
        "cutoff_len": CUTOFF,
        "overwrite_cache": True,
        "preprocessing_num_workers": workers,
        "output_dir": str(work / "lf-out"),
        "report_to": "none",
        **({"tokenized_path": str(tokenized)} if tokenized else {}),
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    ran = common.run_watched(
        [str(py), str(common.BENCH / "lf_preprocess.py"), str(path)], work / f"{name}.log", common.bench_env(workers)
    )
    return _result(ran)


def _result(ran: common.Ran) -> dict | None:
    got = last_json(ran.log) if ran.returncode == 0 else None
    if got is None:
        common.say(f"bench: failed (exit {ran.returncode}); last lines of {ran.log}:\n{common.tail(ran.log)}")
        return None
    return {**got, "peak_rss": ran.peak_rss, "wall_s": ran.wall_s}


def run_lmforge_train(model: Path, data: Path, work: Path, workers: int, cache: Path, name: str) -> dict | None:
    """`lmforge train` to its first step; the times (from the process start) it reached training and step 1."""
    recipe = lmforge_recipe(model, data, work / f"{name}-out", workers, cache_dir=cache)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**common.bench_env(workers), "TRANSFORMERS_VERBOSITY": "info"}
    ran = common.run_watched(
        [str(common.MAIN_PY.parent / "lmforge"), "train", str(path), "--overwrite"],
        work / f"{name}.log",
        env,
        watch={"data": DATA_READY, "training": TRAINING_STARTS, "step": FIRST_STEP},
    )
    if ran.returncode != 0 or "step" not in ran.marks:
        common.say(f"bench: {name} failed (exit {ran.returncode}); see {ran.log}:\n{common.tail(ran.log)}")
        return None
    log = ran.log.read_text(encoding="utf-8", errors="replace")
    encoded, loaded = ENCODED.search(log), LOADED.search(log)
    return {
        "data_ready_at_s": ran.marks.get("data"),
        "to_training_s": ran.marks.get("training"),
        "to_first_step_s": ran.marks["step"],
        "encode_s": float(encoded.group(1)) if encoded else None,
        "load_s": float(loaded.group(1)) if loaded else None,
        "wall_s": ran.wall_s,
    }


def report(
    n: int,
    workers: int,
    ours: dict | None,
    lf: dict | None,
    lf_cached: dict | None,
    cold: dict | None,
    warm: dict | None,
    ratios: list[float],
    alone: dict | None,
) -> None:
    rows = []
    for label, r in (
        ("lmforge", ours),
        ("LLaMA-Factory", lf),
        ("LLaMA-Factory, tokenized_path load", lf_cached),
        ("the tokenizer alone", alone),
    ):
        if r is None:
            rows.append([label, "n/a", "", "", "", ""])
            continue
        loading = r is lf_cached  # no encoding happens: only the seconds mean something
        rows.append(
            [
                label,
                "(load)" if loading else f"{r['tokens'] / r['seconds']:,.0f}",
                "" if loading or "samples" not in r else f"{r['samples'] / r['seconds']:,.0f}",
                f"{r['seconds']:,.2f}",
                f"{r['tokens']:,}",
                common.fmt_mib(r["peak_rss"]),
            ]
        )
    common.print_table(["preprocessing", "tokens/s", "samples/s", "seconds", "tokens", "peak RSS"], rows)
    print(f"\n{n:,} conversations, {workers} processes each, max_length {CUTOFF}")
    if ours and lf:
        print(
            f"lmforge vs LLaMA-Factory: {(ours['tokens'] / ours['seconds']) / (lf['tokens'] / lf['seconds']):.2f}x "
            f"tokens/s (fastest of each); trained tokens {ours['trained_tokens']:,} vs {lf['trained_tokens']:,} "
            "(LLaMA-Factory also trains the newline after each <|im_end|>)"
        )
        if len(ratios) > 1:
            print(
                f"  each repeat's ratio (the two run one after the other): {', '.join(f'{r:.2f}x' for r in ratios)}; "
                f"median {statistics.median(ratios):.2f}x"
            )
    if alone and lf and ours:
        ceiling = alone["tokens"] / alone["seconds"]
        print(
            f"the tokenizer alone (no reading, rendering or masks) reaches "
            f"{ceiling / (lf['tokens'] / lf['seconds']):.2f}x LLaMA-Factory's tokens/s; lmforge runs at "
            f"{(ours['tokens'] / ours['seconds']) / ceiling:.0%} of it"
        )
    if cold and warm:
        first = cold["encode_s"] or (ours or {}).get("seconds")
        print(
            f"\nlmforge train, cold data cache: data ready at {cold['data_ready_at_s']:.1f}s, training starts at "
            f"{cold['to_training_s']:.1f}s, step 1 done at {cold['to_first_step_s']:.1f}s (preprocessing "
            f"{first:.1f}s of it)"
        )
        print(
            f"lmforge train, warm data cache: data ready at {warm['data_ready_at_s']:.1f}s, training starts at "
            f"{warm['to_training_s']:.1f}s, step 1 done at {warm['to_first_step_s']:.1f}s = "
            f"{warm['to_first_step_s'] / first:.1%} of the first run's preprocessing time (target < 10%)"
        )
        if warm["load_s"] is not None:
            print(
                f"  its data phase (cache lookup and load): {warm['load_s']:.2f}s = {warm['load_s'] / first:.1%} of "
                "the first run's preprocessing time; the rest is start-up (imports, tokenizer, model, trainer)"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k conversations instead of 100k")
    p.add_argument("--conversations", type=int)
    p.add_argument("--workers", type=int, default=common.os.cpu_count() or 1, help="processes for each framework")
    p.add_argument("--skip-train", action="store_true", help="leave out the cached-rerun training runs")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run both preprocessings this many times, alternating; the table keeps the fastest of each",
    )
    a = p.parse_args(argv)
    n = a.conversations or (10_000 if a.quick else 100_000)
    model = common.model_dir()
    common.say(f"bench: making {n:,} conversations ...")
    data = common.chat_data(n, DATA_MAX_LENGTH, seed=1, exact=False).path
    work = common.WORK / "preprocess" / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    common.say(f"bench: load average {_load()} before")
    ours = lf = None
    ratios = []
    for k in range(a.repeats):  # alternate, so that both meet the same changes in the machine's load
        common.say(f"bench: lmforge preprocessing ({k + 1}/{a.repeats}) ...")
        mine = run_lmforge_encode(model, data, work, a.workers)
        common.say(f"bench: LLaMA-Factory preprocessing ({k + 1}/{a.repeats}) ...")
        theirs = run_lf_encode(model, data, work, a.workers, "lf-encode")
        if mine and theirs:
            ratios.append((mine["tokens"] / mine["seconds"]) / (theirs["tokens"] / theirs["seconds"]))
        ours, lf = _faster(ours, mine), _faster(lf, theirs)
    common.say("bench: the tokenizer alone ...")
    alone = run_tokenizer_only(model, data, work, a.workers)
    lf_cached = None
    if lf:
        tokenized = work / "lf-tokenized"
        shutil.rmtree(tokenized, ignore_errors=True)
        common.say("bench: LLaMA-Factory with tokenized_path: encode and save, then load ...")
        if run_lf_encode(model, data, work, a.workers, "lf-encode-save", tokenized):
            lf_cached = run_lf_encode(model, data, work, a.workers, "lf-encode-load", tokenized)
    cold = warm = None
    if not a.skip_train:
        cache = work / "lmforge-cache"
        shutil.rmtree(cache, ignore_errors=True)
        common.say("bench: lmforge train, cold then warm data cache ...")
        cold = run_lmforge_train(model, data, work, a.workers, cache, "lmforge-train-cold")
        warm = run_lmforge_train(model, data, work, a.workers, cache, "lmforge-train-warm") if cold else None
    report(n, a.workers, ours, lf, lf_cached, cold, warm, ratios, alone)
    print(f"load average {_load()} after")
    (work / "results.json").write_text(
        json.dumps(
            {
                "ours": ours,
                "lf": lf,
                "lf_cached": lf_cached,
                "cold": cold,
                "warm": warm,
                "ratios": ratios,
                "tokenizer_alone": alone,
            },
            indent=2,
        )
    )


def _faster(best: dict | None, got: dict | None) -> dict | None:
    if got is None or (best is not None and best["seconds"] <= got["seconds"]):
        return best
    return got


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in common.os.getloadavg())


if __name__ == "__main__":
    main()
