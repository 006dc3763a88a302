"""The report of an evaluation: a short table on stdout and one JSON file (what was evaluated, with which chat
template, each task's metrics, counts and settings, and how long it took)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.train.rundir import TEMPLATE_FILE


def template_info(source: str, adapter: Path | None, template: str) -> dict[str, Any]:
    """The template's sha256 (the same text gives the same hash wherever it is read from) and its file, if any."""
    info: dict[str, Any] = {"sha256": hashlib.sha256(template.encode("utf-8")).hexdigest()}
    for folder in (adapter, Path(source)):
        if folder is not None and (Path(folder) / TEMPLATE_FILE).is_file():
            info["file"] = str(Path(folder) / TEMPLATE_FILE)
            break
    return info


def table(tasks: dict[str, dict[str, Any]]) -> str:
    """One line per metric of each task, with the task's main count."""
    lines = [f"{'task':<28} {'metric':<24} {'value':>12}  n"]
    for name, result in tasks.items():
        count = _main_count(result["counts"])
        for k, (metric, value) in enumerate(result["metrics"].items()):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"{name if k == 0 else '':<28} {metric:<24} {shown:>12}  {count if k == 0 else ''}")
    return "\n".join(lines)


def _main_count(counts: dict[str, Any]) -> str:
    for key in ("tokens", "rows", "questions", "samples", "pairs"):
        if key in counts:
            return f"{counts[key]} {key}"
    return ""


def write_report(path: Path, report: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as err:
        raise LmforgeError(f"--out {path}: cannot write the report ({err.strerror})") from None
