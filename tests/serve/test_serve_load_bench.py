"""bench/serve_load.py --quick runs to its end on the tiny model and prints both rows and the ratio (no timing is
asserted: the figures depend on the machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"


def test_quick_load_test_prints_both_rows_and_the_ratio(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "batched (--max-batch 32)" in result.stdout
    assert "one at a time (--max-batch 1)" in result.stdout
    assert "batched / one at a time:" in result.stdout
