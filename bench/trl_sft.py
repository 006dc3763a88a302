"""TRL's SFTTrainer on the benchmark data: run by sft_throughput.py inside the TRL environment.

Assistant-only loss (the template's {% generation %} blocks), fp32 (or --dtype bf16), SDPA, no gradient checkpointing
(TRL's SFTConfig turns it on by default; lmforge and LLaMA-Factory runs have it off). With --packing,
TRL's default best-fit-decreasing packing, which makes batches padding-free (one row, position ids).
Writes the Trainer's metrics and the step count to --metrics.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--model", "--data", "--out", "--metrics"):
        p.add_argument(name, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--packing", action="store_true")
    p.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="weights; bf16 also turns on bf16 autocast"
    )
    p.add_argument("--attn", default="sdpa")
    a = p.parse_args()

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation=a.attn)
    dataset = load_dataset("json", data_files=a.data, split="train")
    config = SFTConfig(
        output_dir=a.out,
        per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=a.epochs,
        learning_rate=a.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        seed=a.seed,
        data_seed=a.seed,
        max_length=a.max_length,
        packing=a.packing,
        assistant_only_loss=True,
        gradient_checkpointing=False,
        bf16=a.dtype == "bf16",
        fp16=False,
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    ready = time.perf_counter()
    result = trainer.train()
    metrics = dict(result.metrics)
    data = trainer.train_dataset
    labels = data["labels"] if "labels" in data.column_names else None
    metrics.update(
        steps=trainer.state.global_step,
        setup_s=ready - started,
        rows=len(data),
        peak_gpu_memory_mib=round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
        trained_tokens_in_data=sum(sum(x != -100 for x in row) for row in labels) if labels is not None else None,
    )
    with open(a.metrics, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)


if __name__ == "__main__":
    main()
