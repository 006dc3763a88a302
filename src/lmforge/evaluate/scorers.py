"""How a generated reply is scored against its reference: each scorer maps (reply, reference) to a number in
[0, 1] (a bool counts as 0 or 1), and a task reports each scorer's mean.

A task file's `scorers:` lists them:

    exact                          the reply equals the reference (surrounding whitespace ignored)
    final_number                   the last number in the reply is the reference's last number
    {regex: PATTERN, name: N}      PATTERN's last match (its first group, if it has one) in the reply equals the
                                   one in the reference; neither found counts 0
    module:function                a Python function (reply, reference) -> float | bool: an importable module,
    path/to/file.py:function       or a file, relative to the task file
    {python: ..., name: N}         the same, named N in the report
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

NUMBER = r"-?\d+(?:\.\d+)?"
BUILT_IN = ("exact", "final_number")


@dataclass(frozen=True)
class Scorer:
    name: str
    score: Callable[[str, str], Any]
    origin: str  # what the task said, for messages and the report

    def __call__(self, reply: str, reference: str) -> float:
        value = self.score(reply, reference)
        if isinstance(value, (bool, numbers.Real)):
            return float(value)
        raise LmforgeError(
            f"scorer {self.origin} returned {type(value).__name__} {value!r}; expected a float or a bool"
        )


def exact(reply: str, reference: str) -> bool:
    return reply.strip() == reference.strip()


def last_match(pattern: re.Pattern, text: str) -> str | None:
    """The last match of `pattern` in `text` (its first group where it has groups), or None."""
    found = list(pattern.finditer(text))
    if not found:
        return None
    last = found[-1]
    return last.group(1) if pattern.groups else last.group(0)


def regex_scorer(pattern: str, name: str = "regex") -> Scorer:
    compiled = re.compile(pattern)

    def score(reply: str, reference: str) -> bool:
        got = last_match(compiled, reply)
        return got is not None and got == last_match(compiled, reference)

    return Scorer(name, score, f"regex {pattern!r}")


def parse_scorers(raw: Any, base: Path, where: str) -> tuple[Scorer, ...]:
    """The scorers a task's `scorers:` list names (module docstring); `base` resolves file paths."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise LmforgeError(f"{where}: scorers: the list is empty; name at least one (e.g. scorers: [exact])")
    scorers = [_scorer(item, base, f"{where}: scorers[{k}]") for k, item in enumerate(items)]
    names = [s.name for s in scorers]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise LmforgeError(f"{where}: scorers: two are named {twice!r}; give one a `name:`")
    return tuple(scorers)


def _scorer(item: Any, base: Path, where: str) -> Scorer:
    if isinstance(item, str):
        if item == "exact":
            return Scorer("exact", exact, "exact")
        if item == "final_number":
            return regex_scorer(NUMBER, "final_number")
        if ":" in item:
            return python_scorer(item, base, where)
        raise LmforgeError(
            f"{where}: unknown scorer {item!r}; expected {', '.join(BUILT_IN)}, {{regex: PATTERN}} or "
            "module:function (or path/to/file.py:function)"
        )
    if (
        isinstance(item, dict)
        and len(set(item) & {"regex", "python"}) == 1
        and set(item) <= {"regex", "python", "name"}
    ):
        if "regex" in item:
            try:
                return regex_scorer(str(item["regex"]), str(item.get("name", "regex")))
            except re.error as err:
                raise LmforgeError(f"{where}: regex {item['regex']!r} is not a valid pattern: {err}") from None
        found = python_scorer(str(item["python"]), base, where)
        return Scorer(str(item.get("name", found.name)), found.score, found.origin)
    raise LmforgeError(
        f"{where}: {item!r} is no scorer; expected {', '.join(BUILT_IN)}, {{regex: PATTERN, name: N}}, "
        "{python: module:function, name: N} or module:function"
    )


def python_scorer(target: str, base: Path, where: str) -> Scorer:
    """`module:function` imported, or `path/to/file.py:function` loaded from the file (relative to `base`)."""
    module_name, _, function = target.rpartition(":")
    if not module_name or not function:
        raise LmforgeError(f"{where}: {target!r}: expected module:function or path/to/file.py:function")
    if module_name.endswith(".py"):
        module = _from_file(base / module_name, where)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise LmforgeError(
                f"{where}: cannot import module {module_name!r} for scorer {target!r} ({err}); put it on "
                "PYTHONPATH or name its file: path/to/file.py:function"
            ) from None
    score = getattr(module, function, None)
    if not callable(score):
        raise LmforgeError(f"{where}: {module_name} has no function {function!r} (scorer {target!r})")
    return Scorer(function, score, target)


def _from_file(path: Path, where: str):
    if not path.is_file():
        raise LmforgeError(f"{where}: scorer file {path} does not exist")
    name = f"lmforge_scorer_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file: any error it raises is theirs to see, with where it came from
        del sys.modules[name]
        raise LmforgeError(f"{where}: loading scorer file {path} failed: {type(err).__name__}: {err}") from None
    return module
