"""The whole quickstart, reduced: same steps, a few training steps each (about a minute on two cores)."""

from __future__ import annotations

import json

import pytest

from lmforge.quickstart.run import run_quickstart


@pytest.mark.slow
def test_quickstart_quick_runs_every_step(tmp_path, capsys):
    figures = run_quickstart(tmp_path / "qs", quick=True)
    for name in ("pretrained", "fine-tuned"):
        assert 0.0 <= figures[name]["exact"] <= figures[name]["final_number"] <= 1.0
    assert figures["questions"] == 12
    assert json.loads((tmp_path / "qs" / "results.json").read_text()) == figures
    for stage in ("pt", "sft"):
        assert (tmp_path / "qs" / stage / "chat_template.jinja").is_file()
    out = capsys.readouterr().out
    assert "[5/5]" in out and "sample chat 1" in out and "fine-tuned" in out
