"""The bridge to lm-evaluation-harness: its `simple_evaluate` run on the model and tokenizer lmforge loaded.

lm-eval's HFLM takes a model instance, so an adapter run, a checkpoint or a model on any device is evaluated as
`load_run` gives it. With `chat: true` lm-eval formats prompts with the tokenizer's chat template, which is set
to the template the run was trained with first (not the base tokenizer's). Local tasks (a task YAML and its
data in a folder) are found through `include_path`; nothing needs the hub when the task's data is local.
lm-eval is an optional dependency: `pip install 'lmforge[eval]'`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer
    from lmforge.evaluate.tasks import TaskSpec

INSTALL = "pip install 'lmforge[eval]' (or pip install 'lm-eval>=0.4.5')"


def require_lm_eval(spec: TaskSpec) -> None:
    """Raise, naming the task and what to install, when lm-eval cannot be imported (checked before the model
    loads)."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise LmforgeError(f"{spec.where}: lm-eval tasks need lm-evaluation-harness ({err}); {INSTALL}") from None


def evaluate_harness(
    model, tokenizer: Tokenizer, template: str, spec: TaskSpec, batch_size: int, keep_samples: bool = False
) -> dict:
    """lm-eval's figures for the task names in `spec.task`; with `keep_samples`, each document's prompt as lm-eval
    gave it to the model, its target and its figures."""
    require_lm_eval(spec)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(spec.include_path) if spec.include_path else None)
    unknown = [name for name in spec.task if not manager.match_tasks([name])]
    if unknown:
        where = f" or in {spec.include_path}" if spec.include_path else " (local tasks: include_path in a task file)"
        raise LmforgeError(f"{spec.where}: lm-eval knows no task {unknown[0]!r}{where}")
    if spec.chat:
        tokenizer.chat_template = template
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = simple_evaluate(
        model=lm,
        tasks=list(spec.task),
        num_fewshot=spec.num_fewshot,
        limit=spec.limit,
        task_manager=manager,
        apply_chat_template=spec.chat,
        log_samples=keep_samples,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    out = _figures(results, spec)
    if keep_samples:
        out["samples"] = [_sample(task, s) for task, rows in results.get("samples", {}).items() for s in rows]
    return out


def _sample(task: str, row: dict[str, Any]) -> dict[str, Any]:
    figures = {name: row[name] for name in row.get("metrics", []) if name in row}
    return {
        "task": task,
        "doc_id": row["doc_id"],
        "context": row["arguments"][0][0],
        "target": row["target"],
        **figures,
    }


def _figures(results: dict[str, Any], spec: TaskSpec) -> dict:
    """lm-eval's `results` per task ("acc,none": 0.5, "acc_stderr,none": ...) as metrics named `acc` (a filter
    other than none appended: `exact_match/flexible-extract`), prefixed by the task when there are several."""
    metrics: dict[str, float] = {}
    counts: dict[str, Any] = {}
    several = len(results["results"]) > 1
    for task, figures in results["results"].items():
        for key, value in figures.items():
            if "," not in key or not isinstance(value, (int, float)) or "_stderr" in key:
                continue
            metric, _, kind = key.partition(",")
            name = metric if kind == "none" else f"{metric}/{kind}"
            metrics[f"{task}:{name}" if several else name] = round(float(value), 6)
        effective = results.get("n-samples", {}).get(task, {}).get("effective")
        if effective is not None:
            counts[f"{task}:samples" if several else "samples"] = effective
    settings = {
        "tasks": list(spec.task),
        "num_fewshot": spec.num_fewshot,
        "chat": spec.chat,
        "include_path": str(spec.include_path) if spec.include_path else None,
        "lm_eval": results.get("lm_eval_version") or _version(),
    }
    return {"metrics": metrics, "counts": counts, "settings": settings}


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm-eval")
    except PackageNotFoundError:
        return None
