"""Scorers: exact match, the final number, regex extraction and the user's Python functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.evaluate.scorers import parse_scorers


def scorers(raw, base: Path | None = None):
    return {s.name: s for s in parse_scorers(raw, base or Path.cwd(), "task.yaml")}


def test_built_in_scorers():
    s = scorers(["exact", "final_number", {"regex": r"answer: (\w+)", "name": "answer"}])
    assert s["exact"](" 7 times 6 is 42.\n", "7 times 6 is 42.") == 1.0
    assert s["exact"]("7 times 6 is 42", "7 times 6 is 42.") == 0.0
    assert s["final_number"]("it is 42, not 41 or 42.5", "42.5") == 1.0
    assert s["final_number"]("6 times 7 is 42", "7 times 6 is 43.") == 0.0
    assert s["final_number"]("no number", "no number either") == 0.0  # nothing found is never a match
    assert s["answer"]("answer: yes. Later answer: no", "answer: no") == 1.0  # the last match, its group


def test_python_function_from_a_file_relative_to_the_task_file(tmp_path):
    (tmp_path / "my_scores.py").write_text(
        "def overlap(reply, reference):\n"
        "    a, b = set(reply.split()), set(reference.split())\n"
        "    return len(a & b) / len(b)\n"
        "def text(reply, reference):\n    return 'yes'\n"
    )
    s = scorers(["my_scores.py:overlap", {"python": "my_scores.py:text", "name": "bad"}], tmp_path)
    assert s["overlap"]("a b c", "a b d e") == 0.5
    with pytest.raises(LmforgeError, match="my_scores.py:text returned str 'yes'; expected a float or a bool"):
        s["bad"]("x", "y")


def test_python_function_from_an_importable_module():
    s = scorers(["operator:eq"])
    assert s["eq"]("a", "a") == 1.0 and s["eq"]("a", "b") == 0.0


@pytest.mark.parametrize(
    "raw, message",
    [
        (["exakt"], r"task.yaml: scorers\[0\]: unknown scorer 'exakt'; expected exact, final_number"),
        (["no_such_module_xyz:f"], r"scorers\[0\]: cannot import module 'no_such_module_xyz'"),
        (["operator:no_such"], r"operator has no function 'no_such'"),
        (["missing.py:f"], r"scorer file .*missing.py does not exist"),
        ([{"regex": "("}], r"regex '\(' is not a valid pattern"),
        (["exact", {"regex": "x", "name": "exact"}], r"two are named 'exact'"),
        ([], r"the list is empty"),
        ([{"regex": "x", "python": "a:b"}], r"is no scorer"),
    ],
)
def test_bad_scorers_are_refused_naming_the_entry(raw, message):
    with pytest.raises(LmforgeError, match=message):
        parse_scorers(raw, Path.cwd(), "task.yaml")
