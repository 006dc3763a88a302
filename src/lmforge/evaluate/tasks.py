"""What `lmforge eval --tasks` names: a task file (YAML or JSON) or a short inline form, read into TaskSpecs.

Inline forms, for the common cases (TYPE:WHAT):

    perplexity:DATA.jsonl      loss and perplexity on text or chat rows, with the training masks
    generate:DATA.jsonl        greedy replies to `prompt`/`messages` rows, exact match against `reference`
    choice:DATA.jsonl          multiple choice by log-likelihood (`question`, `choices`, `answer`)
    lm-eval:TASK               a task of lm-evaluation-harness

A task file holds one task (a mapping with `type`) or several (a list of them, or a mapping with `tasks:`);
`data` and every other path in it are relative to the file. The keys each type reads are in KEYS; any other
key is refused, naming the file and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import LmforgeError
from lmforge.evaluate.scorers import Scorer, parse_scorers

TYPES = ("perplexity", "generate", "choice", "lm-eval", "judge")
TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
COMMON = ("type", "name", "limit")
KEYS = {
    "perplexity": ("data", "format", "train_on", "max_length"),
    "generate": ("data", "scorers", "max_new_tokens"),
    "choice": ("data",),
    "lm-eval": ("task", "include_path", "num_fewshot", "chat"),
    "judge": (
        "data",
        "mode",
        "judge_model",
        "base_url",
        "api_key_env",
        "opponent",
        "max_new_tokens",
        "judge_max_tokens",
    ),
}
NEEDS_DATA = ("perplexity", "generate", "choice", "judge")
PERPLEXITY_FORMATS = ("auto", "text", "messages", "sharegpt", "alpaca")
TRAIN_ON = ("all_assistant", "last_assistant", "everything")
JUDGE_MODES = ("single", "pairwise")
MAX_NEW_TOKENS = 256
MAX_LENGTH = 2048
JUDGE_MAX_TOKENS = 1024  # room for the judge's explanation before its verdict


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation as the user asked for it; `where` names it in messages (the file, or the inline form)."""

    type: str
    name: str
    where: str
    data: Path | None = None
    limit: int | None = None
    scorers: tuple[Scorer, ...] = ()
    max_new_tokens: int = MAX_NEW_TOKENS
    format: str = "auto"
    train_on: str = "all_assistant"
    max_length: int = MAX_LENGTH
    task: tuple[str, ...] = ()  # lm-eval task names
    include_path: Path | None = None
    num_fewshot: int | None = None
    chat: bool = False
    mode: str = "single"
    judge_model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    judge_max_tokens: int = JUDGE_MAX_TOKENS
    opponent: str = "reference"
    options: dict[str, Any] = field(default_factory=dict)  # what the file said, for the report


def parse_tasks(items: list[str]) -> list[TaskSpec]:
    """The tasks `--tasks` names, in order; names made unique (a second `generate:a` becomes `generate:a#2`)."""
    specs: list[TaskSpec] = []
    for item in items:
        specs += _from_file(Path(item)) if item.lower().endswith(TASK_FILE_SUFFIXES) else [_inline(item)]
    seen: dict[str, int] = {}
    unique = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        name = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
        unique.append(spec if name == spec.name else replace(spec, name=name))
    return unique


def _inline(item: str) -> TaskSpec:
    kind, sep, what = item.partition(":")
    where = f"--tasks {item}"
    if not sep or not what:
        raise LmforgeError(
            f"{where}: expected a task file (.yaml, .yml, .json) or TYPE:WHAT, e.g. perplexity:data.jsonl, "
            "generate:data.jsonl, choice:data.jsonl, lm-eval:TASKNAME"
        )
    if kind not in TYPES:
        raise LmforgeError(f"{where}: unknown task type {kind!r}; expected one of {', '.join(TYPES)}")
    if kind == "judge":
        raise LmforgeError(f"{where}: a judge task needs a task file (judge_model, base_url, mode); see README")
    if kind == "lm-eval":
        return build_spec({"type": kind, "task": what, "name": f"lm-eval:{what}"}, Path.cwd(), where)
    return build_spec({"type": kind, "data": what, "name": f"{kind}:{Path(what).stem}"}, Path.cwd(), where)


def _from_file(path: Path) -> list[TaskSpec]:
    if not path.is_file():
        raise LmforgeError(f"--tasks {path}: the task file does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise LmforgeError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {err}") from None
    if isinstance(raw, dict) and "tasks" in raw and "type" not in raw:
        raw = raw["tasks"]
    entries = raw if isinstance(raw, list) else [raw]
    specs = []
    for k, entry in enumerate(entries):
        where = f"{path}" if len(entries) == 1 else f"{path}: task {k + 1}"
        if not isinstance(entry, dict):
            raise LmforgeError(f"{where}: a task is a mapping with `type` ({', '.join(TYPES)}) and `data`")
        default = path.stem if len(entries) == 1 else f"{path.stem}.{k + 1}"
        specs.append(build_spec({"name": default, **entry}, path.parent, where))
    return specs


def build_spec(raw: dict[str, Any], base: Path, where: str) -> TaskSpec:
    """A task's mapping checked key by key; relative paths resolved against `base` (the task file's folder)."""
    kind = raw.get("type")
    if kind not in TYPES:
        raise LmforgeError(f"{where}: type {kind!r} is unknown; expected one of {', '.join(TYPES)}")
    allowed = (*COMMON, *KEYS[kind])
    unknown = [key for key in raw if key not in allowed]
    if unknown:
        raise LmforgeError(f"{where}: key {unknown[0]!r} is not read by a {kind} task; expected {', '.join(allowed)}")
    values: dict[str, Any] = {"type": kind, "name": str(raw["name"]), "where": where, "options": dict(raw)}
    if "limit" in raw:
        values["limit"] = _count(raw["limit"], "limit", where)
    if kind in NEEDS_DATA:
        values["data"] = _data_file(raw, base, where)
    if kind == "perplexity":
        values["format"] = _choice(raw, "format", PERPLEXITY_FORMATS, where)
        values["train_on"] = _choice(raw, "train_on", TRAIN_ON, where)
        values["max_length"] = _count(raw.get("max_length", MAX_LENGTH), "max_length", where)
    if kind in ("generate", "judge"):
        values["max_new_tokens"] = _count(raw.get("max_new_tokens", MAX_NEW_TOKENS), "max_new_tokens", where)
    if kind == "generate":
        values["scorers"] = parse_scorers(raw.get("scorers", ["exact"]), base, where)
    if kind == "lm-eval":
        values.update(_lm_eval_values(raw, base, where))
    if kind == "judge":
        values.update(_judge_values(raw, base, where))
    return TaskSpec(**values)


def _lm_eval_values(raw: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    names = raw.get("task")
    names = [names] if isinstance(names, str) else names
    if not names or not all(isinstance(n, str) and n for n in names):
        raise LmforgeError(f"{where}: task: expected an lm-eval task name or a list of them (e.g. task: arc_easy)")
    values: dict[str, Any] = {"task": tuple(n for name in names for n in name.split(","))}
    if "include_path" in raw:
        folder = base / str(raw["include_path"])
        if not folder.is_dir():
            raise LmforgeError(f"{where}: include_path {folder} is not a folder of lm-eval task YAML files")
        values["include_path"] = folder
    if "num_fewshot" in raw:
        values["num_fewshot"] = _count(raw["num_fewshot"], "num_fewshot", where, zero=True)
    if "chat" in raw:
        if not isinstance(raw["chat"], bool):
            raise LmforgeError(f"{where}: chat: expected true (prompts through the run's chat template) or false")
        values["chat"] = raw["chat"]
    return values


def _judge_values(raw: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {"mode": _choice(raw, "mode", JUDGE_MODES, where)}
    for key in ("judge_model", "base_url"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise LmforgeError(
                f"{where}: {key}: expected a string (the judge's OpenAI-compatible endpoint, e.g. base_url: "
                "http://localhost:8000/v1, and the model name it serves)"
            )
        values[key] = raw[key]
    if "api_key_env" in raw:
        values["api_key_env"] = str(raw["api_key_env"])
    values["judge_max_tokens"] = _count(raw.get("judge_max_tokens", JUDGE_MAX_TOKENS), "judge_max_tokens", where)
    opponent = str(raw.get("opponent", "reference"))
    if opponent != "reference":
        local = base / opponent
        opponent = str(local) if local.exists() else opponent  # else a hub id, checked when loaded
    values["opponent"] = opponent
    return values


def _data_file(raw: dict[str, Any], base: Path, where: str) -> Path:
    if not isinstance(raw.get("data"), str) or not raw["data"]:
        raise LmforgeError(f"{where}: data: expected the path of a JSON Lines file (relative to the task file)")
    path = base / raw["data"]
    if not path.is_file():
        raise LmforgeError(f"{where}: data file {path} does not exist")
    return path


def _choice(raw: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = raw.get(key, choices[0])
    if value not in choices:
        raise LmforgeError(f"{where}: {key}: {value!r} is unknown; expected one of {', '.join(choices)}")
    return value


def _count(value: Any, key: str, where: str, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise LmforgeError(f"{where}: {key}: {value!r} is not a {'count' if zero else 'positive whole number'}")
    return value
