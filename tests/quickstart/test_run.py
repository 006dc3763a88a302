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
    captured = capsys.readouterr()
    assert "[1/5]" in captured.err and "[5/5]" in captured.err  # progress on stderr
    assert "sample chat 1" in captured.out and "quickstart results" in captured.out  # the result on stdout
    assert "[5/5]" not in captured.out
