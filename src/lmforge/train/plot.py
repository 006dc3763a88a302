"""A dependency-free SVG plot of the training (and eval) loss, written into the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH, HEIGHT, MARGIN = 640, 360, 48


def write_loss_plot(path: Path, log_history: list[dict[str, Any]]) -> bool:
    """Write `path` as SVG; return False (and write nothing) when there are fewer than two points."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if len(train) < 2:
        return False
    points = train + evals
    x_max = max(s for s, _ in points) or 1
    y_min, y_max = min(v for _, v in points), max(v for _, v in points)
    span = (y_max - y_min) or 1.0

    def xy(step: float, value: float) -> str:
        x = MARGIN + (WIDTH - 2 * MARGIN) * step / x_max
        y = HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (value - y_min) / span
        return f"{x:.1f},{y:.1f}"

    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#888"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#888"/>',
        f'<text x="{MARGIN}" y="{MARGIN - 8}">loss {y_max:.3g}</text>',
        f'<text x="{MARGIN}" y="{HEIGHT - MARGIN + 16}">{y_min:.3g} at step 0</text>',
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - MARGIN + 16}" text-anchor="end">step {x_max}</text>',
        _polyline([xy(s, v) for s, v in train], "#1f77b4", "train"),
    ]
    if evals:
        lines.append(_polyline([xy(s, v) for s, v in evals], "#d62728", "eval"))
    lines.append("</svg>")
    path.write_text("\n".join(lines), encoding="utf-8")
    return True


def _polyline(points: list[str], colour: str, label: str) -> str:
    dots = "".join(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" fill="{colour}"/>' for p in points)
    return f'<g><title>{label}</title><polyline fill="none" stroke="{colour}" points="{" ".join(points)}"/>{dots}</g>'
