"""SFT throughput on one GPU: lmforge vs TRL's SFTTrainer with a ~0.5B model, tokens/s, MFU and peak memory.

    python bench/gpu_sft.py                    # Qwen2.5-0.5B-shaped model (random weights), bf16
    python bench/gpu_sft.py --size tiny --dtype fp32 --conversations 40 --max-length 256   # a CPU smoke run
    python bench/gpu_sft.py --runs lmforge:varlen --profile 5    # where lmforge's step time goes (MFU profile)

Runs on a machine with a CUDA GPU, in an environment with torch, transformers, peft, accelerate,
datasets, pydantic and trl (lmforge from this checkout: PYTHONPATH=src). Every run is its own process.

The same for all: a decoder shaped like Qwen2.5-0.5B (24 layers, hidden 896, 14 heads, 2 KV heads,
MLP 4,864, vocabulary 151,936 with tied embeddings: 494 M parameters), random weights saved once in
bf16; the benchmark's chat data and tokenizer (bench/common.py; the tokenizer uses the first 2,048 ids
of the vocabulary); weights in bf16 with bf16 autocast; AdamW; full fine-tuning; no gradient
checkpointing; one epoch; the same batch size, max_length and learning rate; the loss on the
assistant replies only.

Modes: lmforge packed with `lmforge_varlen` (PyTorch's FlashAttention-2 varlen kernel, padding-free),
packed with sdpa (block-diagonal mask), unpacked with sdpa; TRL unpacked (sdpa) and with packing
(its best-fit decreasing, padding-free; on sdpa transformers builds the mask from the position ids).
LLaMA-Factory is not run here: the GPU machine has no package index and its dependencies cannot be
carried there.

Figures: trained (loss-bearing) tokens/s and all tokens/s of the data (padding not counted) over the
Trainer's train_runtime; MFU = model FLOPs of the data's tokens / train_runtime / the GPU's dense bf16
peak, with model FLOPs = 6 x (matmul parameters, lm_head included) per token plus causal attention
inside each sample, 6 x layers x hidden x n(n+1) per sample of n tokens (forward and backward); peak
GPU memory = torch.cuda.max_memory_allocated in the training process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

QWEN05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151_936,
    tie_word_embeddings=True,
    rope_theta=1_000_000.0,
    max_position_embeddings=32_768,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=4096,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense, SXM, from NVIDIA's data sheets
LR, SEED = 1e-5, 0


@dataclass
class Run:
    framework: str
    mode: str
    train_s: float | None = None
    steps: int | None = None
    peak_gpu_mib: float | None = None
    own_trained_tokens: int | None = None
    wall_s: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def build_model(out: Path, shape: dict) -> Path:
    """The decoder with random weights and the bench tokenizer, saved once (bf16)."""
    stamp = out / "gpu-bench.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == shape:
        return out
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(common.model_dir()))
    config = Qwen2Config(
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, attention_dropout=0.0, **shape
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out), save_jinja_files=False)
    stamp.write_text(json.dumps(shape))
    return out


def model_flops(shape: dict, lengths: list[int]) -> float:
    """Training FLOPs of one pass over samples of these lengths (see the module docstring)."""
    d, ff, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * d // shape["num_attention_heads"]
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ff  # q, o; k, v; gate, up, down
    matmul_params = layers * per_layer + d * shape["vocab_size"]
    tokens = sum(lengths)
    attention = 6 * layers * d * sum(n * (n + 1) for n in lengths)
    return 6 * matmul_params * tokens + attention


def env() -> dict[str, str]:
    e = dict(os.environ)
    src = str(common.ROOT / "src")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (src, e.get("PYTHONPATH", "")) if p)
    e.update(
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        HF_DATASETS_CACHE=str(common.WORK / "hf-datasets-cache"),
        LMFORGE_CACHE=str(common.WORK / "lmforge-cache"),
    )
    return e


def run_lmforge(a, data: common.ChatData, model: Path, mode: str, work: Path) -> Run:
    attn, packed = {"varlen": ("lmforge_varlen", True), "packed-sdpa": ("sdpa", True), "unpacked": ("sdpa", False)}[
        mode
    ]
    out = work / f"lmforge-{mode}"
    recipe = {
        "stage": "sft",
        "model": {"path": str(model), "dtype": a.dtype, "attn_implementation": attn},
        "tuning": {"method": "full"},
        "data": {
            "train": [{"path": str(data.path)}],
            "max_length": a.max_length,
            "packing": packed,
            "cache": False,
            "workers": 8,
        },
        "train": {
            "epochs": 1,
            "batch_size": a.batch_size,
            "lr": LR,
            "scheduler": "cosine",
            "warmup": 0,
            "save_every": 10**9,
            "keep": 1,
            "log_every": 20,
            "seed": SEED,
            "profile_steps": a.profile,
        },
        "output": str(out),
    }
    path = work / f"lmforge-{mode}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    ran = common.run_watched(
        [sys.executable, "-m", "lmforge", "train", str(path), "--overwrite"],
        work / f"lmforge-{mode}.log",
        env(),
        timeout=a.run_timeout,
    )
    run = finish(Run("lmforge", mode), ran, out / "metrics.json", "trained_tokens", "peak_gpu_memory_mib")
    summary = out / "profile" / "summary.txt"
    if a.profile and summary.is_file():
        run.extra["profile"] = str(summary)
        common.say(f"bench: lmforge {mode} profile ({summary}):\n" + "\n".join(summary.read_text().splitlines()[:24]))
    return run


def run_trl(a, data: common.ChatData, model: Path, mode: str, work: Path) -> Run:
    metrics = work / f"trl-{mode}.json"
    cmd = [
        sys.executable,
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
        str(a.max_length),
        "--batch-size",
        str(a.batch_size),
        "--lr",
        str(LR),
        "--seed",
        str(SEED),
        "--dtype",
        a.dtype,
        "--attn",
        "sdpa",
    ] + (["--packing"] if mode == "packing" else [])
    ran = common.run_watched(cmd, work / f"trl-{mode}.log", env(), timeout=a.run_timeout)
    return finish(Run("TRL", mode), ran, metrics, "trained_tokens_in_data", "peak_gpu_memory_mib")


def finish(run: Run, ran: common.Ran, metrics_path: Path, own_key: str, memory_key: str) -> Run:
    run.wall_s = ran.wall_s
    if ran.returncode != 0 or not metrics_path.is_file():
        run.note = f"failed (exit {ran.returncode}; see {ran.log})"
        common.say(f"bench: {run.framework} {run.mode} failed; last lines of {ran.log}:\n{common.tail(ran.log, 25)}")
        return run
    m = json.loads(metrics_path.read_text())
    run.train_s = float(m["train_runtime"])
    run.steps = m.get("steps") or round(run.train_s * float(m.get("train_steps_per_second", 0)))
    run.own_trained_tokens = m.get(own_key)
    run.peak_gpu_mib = m.get(memory_key)
    return run


def gpu_name() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return name, peak


def report(runs: list[Run], data: common.ChatData, shape: dict, a) -> dict:
    device, peak = gpu_name()
    flops = model_flops(shape, data.lengths)
    rows, table = [], []
    for r in runs:
        if r.train_s is None:
            table.append([f"{r.framework} {r.mode}", r.note, "", "", "", "", "", ""])
            rows.append(vars(r))
            continue
        mfu = flops / r.train_s / (peak * 1e12) if peak else None
        row = {
            **vars(r),
            "trained_tok_s": data.trained_tokens / r.train_s,
            "tok_s": data.tokens / r.train_s,
            "mfu": mfu,
        }
        rows.append(row)
        table.append(
            [
                f"{r.framework} {r.mode}",
                f"{row['trained_tok_s']:,.0f}",
                f"{row['tok_s']:,.0f}",
                f"{mfu:.1%}" if mfu is not None else "n/a",
                f"{r.peak_gpu_mib:,.0f} MiB" if r.peak_gpu_mib else "n/a",
                f"{r.train_s:,.1f}",
                str(r.steps or ""),
                f"{r.own_trained_tokens:,}" if r.own_trained_tokens else "",
            ]
        )
    print(
        f"\n{device}; {data.conversations:,} conversations, {data.tokens:,} tokens, {data.trained_tokens:,} "
        f"trained; max_length {a.max_length}, batch {a.batch_size}, {a.dtype}; model FLOPs {flops:.3e}"
    )
    common.print_table(
        ["framework mode", "trained tok/s", "tok/s", "MFU", "peak GPU mem", "train s", "steps", "own count"], table
    )
    done = [r for r in rows if r.get("train_s")]
    for peer in ("TRL",):
        ours = min((r for r in done if r["framework"] == "lmforge"), key=lambda r: r["train_s"], default=None)
        theirs = min((r for r in done if r["framework"] == peer), key=lambda r: r["train_s"], default=None)
        if ours and theirs:
            memory = (
                f", {ours['peak_gpu_mib'] / theirs['peak_gpu_mib']:.2f}x peak GPU memory"
                if ours["peak_gpu_mib"] and theirs["peak_gpu_mib"]
                else ""
            )
            print(
                f"lmforge best ({ours['mode']}) vs {peer} best ({theirs['mode']}): "
                f"{theirs['train_s'] / ours['train_s']:.2f}x tokens/s{memory}"
            )
    return {
        "device": device,
        "peak_tflops": peak,
        "model_flops": flops,
        "runs": rows,
        "data": {"conversations": data.conversations, "tokens": data.tokens, "trained": data.trained_tokens},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("0.5b", "tiny"), default="0.5b")
    p.add_argument("--conversations", type=int, default=3000)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--runs", default="lmforge:varlen,trl:unpacked,trl:packing,lmforge:packed-sdpa,lmforge:unpacked")
    p.add_argument("--run-timeout", type=float, default=240, help="seconds before a run is stopped")
    p.add_argument("--results", type=Path, help="write the results as JSON here too")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="lmforge runs record N steps with torch.profiler (train.profile_steps) and print the top "
        "operators; their train s then include the profiler's overhead on those steps",
    )
    a = p.parse_args(argv)
    shape = QWEN05B if a.size == "0.5b" else TINY
    work = common.WORK / "gpu" / a.size
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = common.chat_data(a.conversations, a.max_length, seed=SEED)
    model = build_model(common.WORK / "assets" / f"gpu-{a.size}", shape)
    common.say(f"bench: data and model ready in {time.perf_counter() - started:.0f}s")
    runners = {"lmforge": run_lmforge, "trl": run_trl}
    runs = []
    for item in a.runs.split(","):
        framework, mode = item.split(":")
        common.say(f"bench: {framework} {mode} ...")
        r = runners[framework](a, data, model, mode, work)
        common.say(f"bench: {framework} {mode}: " + (f"{r.train_s:.1f}s training" if r.train_s else r.note))
        runs.append(r)
        if a.results:  # so far, in case the machine is taken away before the end
            a.results.write_text(json.dumps([vars(x) for x in runs], indent=2))
    results = report(runs, data, shape, a)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    if a.results:
        a.results.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
