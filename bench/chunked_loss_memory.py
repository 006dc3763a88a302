"""Peak memory of one training step (forward + backward) with and without the chunked loss.

    python bench/chunked_loss_memory.py                       # vocab 151,936, 4 x 2048 tokens (the issue's setting)
    python bench/chunked_loss_memory.py --batch 1 --length 256  # a quick smoke run

A tiny Llama decoder (hidden size 64 by default) with a large vocabulary, so the logits dominate as they do in
small and mid-size models with Qwen-size vocabularies. Each mode runs in a fresh subprocess through the real
training path (`LmforgeTrainer.compute_loss` then `backward`), all labels trained:
- on CUDA, peak = torch.cuda.max_memory_allocated during the step, minus what was allocated before it;
- on CPU, peak = the process's resident-set high-water mark (getrusage ru_maxrss, exact, no sampling), minus the
  resident set before the step. tracemalloc does not see torch's allocations, and polling RSS can miss a spike.
Prints both modes, the memory the step adds, the process peak, and the cut.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import psutil

MODES = ("off", "auto")


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(_one_step(args, args.worker)))
        return
    results = {mode: _in_subprocess(mode) for mode in MODES}
    _print_table(args, results)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    return p


def _in_subprocess(mode: str) -> dict:
    cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", mode]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {mode} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _one_step(args, mode: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

    from lmforge.train.trainer import LmforgeTrainer

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.length,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(device).train()
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(output_dir=out, report_to="none", use_cpu=device == "cpu", disable_tqdm=True)
        trainer = LmforgeTrainer(model=model, args=training, loss_chunk=mode)
    ids = torch.randint(0, args.vocab, (args.batch, args.length), device=device)
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    before, start = _memory_now(device), time.perf_counter()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = _memory_peak(device)
    return {
        "mode": mode,
        "device": device,
        "chunk": trainer.loss_chunk,
        "loss": loss.item(),
        "before_mib": before / 2**20,
        "peak_mib": peak / 2**20,
        "step_mib": (peak - before) / 2**20,
        "seconds": seconds,
    }


def _memory_now(device: str) -> int:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return psutil.Process().memory_info().rss


def _memory_peak(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _print_table(args, results: dict) -> None:
    off, on = results["off"], results["auto"]
    tokens = args.batch * args.length
    logits_mib = tokens * args.vocab * 4 / 2**20
    measure = "max_memory_allocated" if off["device"] == "cuda" else "peak RSS"
    print(
        f"one training step: vocab {args.vocab:,}, {args.batch} x {args.length} tokens, hidden {args.hidden}, "
        f"{args.layers} layers, device {off['device']} ({measure})"
    )
    print(f"fp32 logits of the whole batch would be {logits_mib:,.0f} MiB")
    print(f"{'loss':<16}{'chunk':>8}{'step adds MiB':>16}{'process peak MiB':>18}{'seconds':>10}{'loss value':>12}")
    for name, r in (("model's own", off), ("chunked", on)):
        print(
            f"{name:<16}{str(r['chunk'] or '-'):>8}{r['step_mib']:>16,.0f}{r['peak_mib']:>18,.0f}"
            f"{r['seconds']:>10.1f}{r['loss']:>12.5f}"
        )
    step_cut = 1 - on["step_mib"] / off["step_mib"]
    peak_cut = 1 - on["peak_mib"] / off["peak_mib"]
    print(f"cut: {step_cut:.1%} of the memory the step adds, {peak_cut:.1%} of the process peak (target >= 60%)")
    if on["chunk"] is None:
        print("note: loss_chunk auto left chunking off (vocabulary below the threshold); pass --vocab >= 32768")


if __name__ == "__main__":
    main()
