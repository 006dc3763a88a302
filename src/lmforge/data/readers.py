"""Read a data source (a .jsonl or .json file) into canonical records, strictly.

Each format is a name, the key that gives it away, the stage it feeds and a parser that turns one
JSON record into a record or says what is wrong with it. `format: auto` picks the format from the
keys of the first record. Every problem is reported with `file:line` (or `file: record N` for a .json
list) and what was expected; nothing is skipped silently. A later format (alpaca, sharegpt, ...) is
one more entry in FORMATS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lmforge.config.recipe import DataSource
from lmforge.data.records import Conversation, Message, Text
from lmforge.errors import LmforgeError

MAX_PROBLEMS = 10
EXTENSIONS = (".jsonl", ".json")
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content")

Record = Conversation | Text


class RecordProblem(Exception):
    """What is wrong with one record; the reader adds where it is."""


class _UnknownFormat(RecordProblem):
    """format: auto found no known key in the first record."""


@dataclass(frozen=True)
class Format:
    name: str
    key: str  # the top-level key that identifies the format in auto-detection
    stage: str  # the stage whose records it produces
    parse: Callable[[dict[str, Any], str], Record]
    example: str


def _parse_messages(obj: dict[str, Any], source: str) -> Conversation:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordProblem(f'"messages" is {_kind(messages)}; expected a non-empty list of '
                            '{"role", "content"} objects')
    parsed = [_parse_message(i, m) for i, m in enumerate(messages)]
    _check_order(parsed)
    return Conversation(messages=parsed, source=source)


def _parse_message(i: int, m: Any) -> Message:
    if not isinstance(m, dict):
        raise RecordProblem(f'message {i} is {_kind(m)}; expected an object with "role" and "content"')
    for key in MESSAGE_KEYS:
        if key not in m:
            raise RecordProblem(f'message {i} has no "{key}"; expected an object with "role" and "content"')
    extra = [k for k in m if k not in MESSAGE_KEYS]
    if extra:
        raise RecordProblem(f'message {i} has key "{extra[0]}", which lmforge does not read yet; expected only '
                            f'"role" and "content" (remove it, or its information would be lost silently)')
    role, content = m["role"], m["content"]
    if role not in ROLES:
        raise RecordProblem(f"message {i} has role {json.dumps(role)}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise RecordProblem(f"message {i} ({role}) has content {_kind(content)}; expected a string")
    if role == "assistant" and not content.strip():
        raise RecordProblem(f"message {i} (assistant) has empty content; expected the reply text")
    return Message(role=role, content=content)


def _check_order(messages: list[Message]) -> None:
    """An optional system message first, then user and assistant taking turns, ending with the assistant."""
    start = 1 if messages[0].role == "system" else 0
    for i, m in enumerate(messages[start:], start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if m.role != expected:
            after = f"after a {messages[i - 1].role} message" if i else "first"
            raise RecordProblem(f"message {i} has role {m.role} {after}; expected {expected} (an optional system "
                                "message first, then user and assistant taking turns)")
    if messages[-1].role != "assistant":
        raise RecordProblem(f"the last message (message {len(messages) - 1}) has role {messages[-1].role}; "
                            "expected assistant (the reply to train on)")


def _parse_text(obj: dict[str, Any], source: str) -> Text:
    text = obj.get("text")
    if not isinstance(text, str):
        raise RecordProblem(f'"text" is {_kind(text)}; expected a string')
    if not text.strip():
        raise RecordProblem('"text" is empty; expected the document text')
    return Text(text=text, source=source)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("messages", "messages", "sft", _parse_messages,
               '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'),
        Format("text", "text", "pt", _parse_text, '{"text": ...}'),
    )
}


def read_source(source: DataSource, stage: str) -> list[Conversation] | list[Text]:
    """All records of one source, or an LmforgeError listing the first problems with file:line."""
    path = _check_path(source.path)
    rows = _rows_json(path) if path.suffix == ".json" else _rows_jsonl(path)
    records: list[Record] = []
    problems: list[str] = []
    total = 0
    fmt: Format | None = None if source.format == "auto" else FORMATS[source.format]
    if fmt is not None:
        _check_stage(fmt, source, stage)
    for where, obj in rows:
        total += 1
        try:
            if isinstance(obj, RecordProblem):
                raise obj
            if not isinstance(obj, dict):
                raise RecordProblem(f"the record is {_kind(obj)}; expected a JSON object")
            if fmt is None:
                fmt = _detect(obj, stage)
                _check_stage(fmt, source, stage)
            if fmt.key not in obj:
                keys = ", ".join(obj) or "none"
                raise RecordProblem(f'no "{fmt.key}" key (keys: {keys}); expected format {fmt.name}: {fmt.example}')
            records.append(fmt.parse(obj, where))
        except _UnknownFormat as err:
            problems.append(f"{where}: {err}")
            break  # every later record would fail the same way
        except RecordProblem as err:
            problems.append(f"{where}: {err}")
    if problems:
        raise _problems_error(path, problems, total)
    if not records:
        raise LmforgeError(f"{path}: the file holds no records; expected one JSON object per line")
    return records


def _check_path(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise LmforgeError(f"data file {raw} does not exist; check data.train / data.eval.path in the recipe")
    if not path.is_file():
        raise LmforgeError(f"data path {raw} is not a file; expected a {' or '.join(EXTENSIONS)} file")
    if path.suffix not in EXTENSIONS:
        raise LmforgeError(f"data file {raw} has extension {path.suffix!r}; expected one of {', '.join(EXTENSIONS)} "
                           "(JSON Lines: one JSON object per line; .json: one list of objects)")
    return path


def _rows_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(file:line, parsed object or RecordProblem) for each non-blank line, read one line at a time."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, RecordProblem(f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not valid "
                                           "UTF-8; expected UTF-8 text (re-encode the file)")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                yield where, RecordProblem(f"not valid JSON ({err.msg} at column {err.colno}); expected one JSON "
                                           "object per line")


def _rows_json(path: Path) -> Iterator[tuple[str, Any]]:
    """(file: record N, object) for each element of a .json file holding one list."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise LmforgeError(f"{path}: byte at offset {err.start} is not valid UTF-8; expected UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise LmforgeError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(data, list):
        raise LmforgeError(f"{path}: holds {_kind(data)}; expected a list of records (or use .jsonl, one per line)")
    for i, obj in enumerate(data, 1):
        yield f"{path}: record {i}", obj


def _detect(obj: dict[str, Any], stage: str) -> Format:
    found = [f for f in FORMATS.values() if f.key in obj]
    if not found:
        known = "; ".join(f"{f.name} ({f.example})" for f in FORMATS.values())
        raise _UnknownFormat(f"cannot tell the format from the keys {', '.join(obj) or '(none)'}; expected one of: "
                            f"{known}. Set data.train[].format if the keys are right")
    same_stage = [f for f in found if f.stage == stage]
    return (same_stage or found)[0]


def _check_stage(fmt: Format, source: DataSource, stage: str) -> None:
    if fmt.stage != stage:
        wanted = [f.name for f in FORMATS.values() if f.stage == stage]
        raise LmforgeError(f"{source.path}: format {fmt.name} feeds stage {fmt.stage}, but the recipe has stage "
                           f"{stage}; expected format {' or '.join(wanted)} (or change `stage`)")


def _problems_error(path: Path, problems: list[str], total: int) -> LmforgeError:
    shown = problems[:MAX_PROBLEMS]
    more = f" (first {MAX_PROBLEMS} shown)" if len(problems) > MAX_PROBLEMS else ""
    head = f"{path}: {len(problems)} bad record{'s' if len(problems) > 1 else ''} of {total}{more}; fix them:"
    if len(problems) == 1:
        return LmforgeError(problems[0])
    return LmforgeError("\n  ".join([head, *shown]))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
