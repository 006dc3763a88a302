"""The plan as people read it (a table) and as scripts read it (one JSON object)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmforge.plan.counts import Counts
from lmforge.plan.memory import Estimate, Setup
from lmforge.plan.speed import Gpu, Speed
from lmforge.plan.validate import Checked

BYTES_DTYPE = {2: "bf16/fp16", 4: "fp32"}


@dataclass
class Plan:
    recipe: str
    checked: Checked
    counts: Counts
    setup: Setup
    memory: Estimate
    gpu_name: str
    gpu: Gpu
    budget: int  # bytes per device the suggestion may use
    speed: Speed
    mfu: float
    largest_batch: int
    suggestion: str
    measured: int | None = None  # a measured peak of the recipe (bytes), if there is one
    measured_from: str = ""  # where that figure comes from, for the table
    measured_estimate: int | None = None  # the estimate for the measured batch's shape, where it differs from seq

    @property
    def compared(self) -> int:
        """The estimate set beside the measured peak: for the batch that was measured."""
        return self.memory.peak if self.measured_estimate is None else self.measured_estimate

    def as_json(self) -> dict[str, Any]:
        c = self.checked
        return {
            "recipe": self.recipe,
            "checks": {
                "records": c.records,
                "rendered": c.rendered,
                "longest_tokens": c.longest,
                "trained_tokens": c.trained,
                "tokens": c.tokens,
                "vocab": len(c.tokenizer),
            },
            "parameters": {
                "total": self.counts.total,
                "trainable": self.counts.trainable,
                "shape": asdict(self.counts.shape),
            },
            "setup": asdict(self.setup),
            "memory_bytes": {**self.memory.terms, "peak": self.memory.peak, "measured_peak": self.measured},
            "measured_from": self.measured_from or None,
            "estimate_for_measured": self.compared if self.measured else None,
            "gpu": {
                "name": self.gpu_name,
                "peak_bf16_flops": self.gpu.peak_bf16,
                "source": self.gpu.source,
                "budget_bytes": self.budget,
            },
            "speed": {"mfu": self.mfu, **asdict(self.speed)},
            "largest_batch": self.largest_batch,
            "suggestion": self.suggestion,
        }


def size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


def table(plan: Plan) -> str:
    c, k, s, sh = plan.checked, plan.counts, plan.setup, plan.counts.shape
    share = 100 * k.trainable / k.total if k.total else 0.0
    loss = f"chunked ({min(s.loss_chunk, s.rows * s.seq):,} tokens a chunk)" if s.loss_chunk else "the model's own"
    if s.stage not in ("pt", "sft"):
        loss = f"{s.stage} on full logits" + (f", reference {s.reference}" if s.reference else "")
    lines = [
        f"lmforge plan: {plan.recipe}",
        f"checks     tokenizer ({len(c.tokenizer):,} tokens) and template load; {c.records:,} records read; the "
        f"first {c.rendered} rendered and masked (longest {c.longest:,} tokens, {c.trained:,} of {c.tokens:,} trained)",
        f"model      {sh.model_type}, {sh.layers} layers, hidden {sh.hidden:,}, vocab {sh.vocab:,}, "
        f"{BYTES_DTYPE[k.weight_bytes]} weights: "
        f"{k.total:,} parameters, {k.trainable:,} trainable ({share:.2f}%, {s.method})",
        f"step       {s.batch} rows x {s.seq:,} tokens per device{' (pairs: x2 rows)' if s.rows != s.batch else ''}, "
        f"{s.gpus} device(s), {s.strategy}, activation checkpointing {'on' if s.checkpointing else 'off'}, "
        f"loss {loss}, optimizer {s.optimizer}",
        "memory per device (estimate)",
        *(f"  {name:18} {size(v):>12}" for name, v in plan.memory.terms.items() if v),
        f"  {'peak':18} {size(plan.memory.peak):>12}",
        *(
            [
                f"  {'measured peak':18} {size(plan.measured):>12}  ({plan.measured_from})",
                f"  {'estimate for it':18} {size(plan.compared):>12}  "
                f"({100 * (plan.compared - plan.measured) / plan.measured:+.1f}% of the measured peak)",
            ]
            if plan.measured
            else []
        ),
        f"speed      {plan.speed.flops_per_token / 1e9:,.3f} GFLOP a token; "
        f"{plan.speed.tokens_per_second:,.0f} tokens/s "
        f"per device, {plan.speed.tokens_per_second * s.gpus:,.0f} in all, {plan.speed.step_seconds:,.3g} s a step "
        f"(at MFU {plan.mfu:.0%} of {plan.gpu_name}'s {plan.gpu.peak_bf16 / 1e12:,.0f} TFLOP/s: {plan.gpu.source})",
        f"suggestion {plan.suggestion}",
    ]
    return "\n".join(lines)
