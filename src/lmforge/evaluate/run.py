"""`lmforge eval`: load a model once (infer.load.load_run, with the chat template it was trained with), run each
task on it, print the table and write the JSON report."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmforge.console import say
from lmforge.evaluate.report import table, template_info, write_report
from lmforge.evaluate.tasks import TaskSpec, parse_tasks
from lmforge.infer.load import LoadedRun, load_run

DEFAULT_BATCH = 8


def run_eval(
    source: str,
    tasks: list[str],
    adapter: Path | None = None,
    out: Path | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    dtype: str = "auto",
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Every task on the model `source` names; the report (also written to `out` where given)."""
    specs = [_limited(spec, limit) for spec in parse_tasks(tasks)]  # every task checked before the model loads
    if any(spec.type == "lm-eval" for spec in specs):
        from lmforge.evaluate.harness import require_lm_eval

        require_lm_eval(next(spec for spec in specs if spec.type == "lm-eval"))
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    loaded = load_run(source, device=device, dtype=dtype, adapter=adapter)
    results = evaluate_tasks(loaded, specs, batch_size, keep_samples)
    report = {
        "model": str(source),
        "adapter": str(adapter) if adapter else None,
        "template": template_info(str(source), adapter, loaded.template),
        "device": str(loaded.model.device),
        "dtype": str(loaded.model.dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "limit": limit,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 2),
        "tasks": results,
    }
    print(table(results), flush=True)
    if out is not None:
        write_report(out, report)
        say(f"lmforge eval: report written to {out}")
    return report


def evaluate_tasks(
    loaded: LoadedRun, specs: list[TaskSpec], batch_size: int, keep_samples: bool = False, progress: bool = True
) -> dict:
    """Each task's result (type, metrics, counts, settings, seconds) by name, on a model already loaded; a line
    per task on stderr where `progress`."""
    results: dict[str, dict[str, Any]] = {}
    for k, spec in enumerate(specs, 1):
        if progress:
            say(f"[{k}/{len(specs)}] {spec.name} ({spec.type})")
        t0 = time.perf_counter()
        result = _one(loaded, spec, batch_size, keep_samples)
        results[spec.name] = {"type": spec.type, **result, "seconds": round(time.perf_counter() - t0, 2)}
    return results


def _one(loaded: LoadedRun, spec: TaskSpec, batch_size: int, keep_samples: bool) -> dict:
    model, tokenizer, template = loaded
    if spec.type == "perplexity":
        from lmforge.evaluate.perplexity import evaluate_perplexity

        return evaluate_perplexity(model, tokenizer, template, spec, batch_size)
    if spec.type == "generate":
        from lmforge.evaluate.generate import evaluate_generation

        return evaluate_generation(model, tokenizer, template, spec, batch_size, keep_samples)
    if spec.type == "choice":
        from lmforge.evaluate.choice import evaluate_choice

        return evaluate_choice(model, tokenizer, template, spec, batch_size, keep_samples)
    if spec.type == "lm-eval":
        from lmforge.evaluate.harness import evaluate_harness

        return evaluate_harness(model, tokenizer, template, spec, batch_size, keep_samples)
    from lmforge.evaluate.judge_task import evaluate_judge

    return evaluate_judge(loaded, spec, batch_size, keep_samples)


def _limited(spec: TaskSpec, limit: int | None) -> TaskSpec:
    if limit is None:
        return spec
    return replace(spec, limit=min(limit, spec.limit) if spec.limit else limit)
