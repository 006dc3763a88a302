"""The rows of a generation or multiple-choice task file, read with `file:line` and checked field by field.

Generation (and judge) rows: `prompt` (a string, the user's message) or `messages` (OpenAI messages ending with
a user turn), and `reference` (the expected reply; needed by every scorer but a Python function that ignores
it). Multiple-choice rows: `question`, `choices` (a list of two or more strings) and `answer` (the right
choice's index from 0, or its letter A, B, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.config.settings import Source
from lmforge.data.sources.messages import parse_messages
from lmforge.data.sources.problems import RecordProblem
from lmforge.data.sources.read import iter_rows
from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class PromptRow:
    where: str  # file:line
    messages: list[dict]
    reference: str | None


@dataclass(frozen=True)
class ChoiceRow:
    where: str
    messages: list[dict]  # the question as the conversation the choices reply to
    choices: list[str]
    answer: int


def prompt_rows(path: Path, limit: int | None = None, need_reference: bool = True) -> list[PromptRow]:
    rows = []
    for where, row in _rows(path, limit):
        reference = row.get("reference")
        if reference is None and need_reference:
            raise LmforgeError(f"{where}: the row has no `reference`; expected the reply the answer is scored against")
        if reference is not None and not isinstance(reference, str):
            raise LmforgeError(f"{where}: `reference` is {type(reference).__name__}; expected a string")
        rows.append(PromptRow(where, conversation(row, where), reference))
    return rows


def choice_rows(path: Path, limit: int | None = None) -> list[ChoiceRow]:
    rows = []
    for where, row in _rows(path, limit):
        question, choices = row.get("question"), row.get("choices")
        if not isinstance(question, str) or not question:
            raise LmforgeError(f"{where}: the row has no `question` string; expected question, choices, answer")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise LmforgeError(f"{where}: `choices` must be a list of two or more non-empty strings")
        rows.append(ChoiceRow(where, [{"role": "user", "content": question}], choices, _answer(row, choices, where)))
    return rows


def conversation(row: dict[str, Any], where: str) -> list[dict]:
    """The messages a reply is asked for: `prompt` as one user message, or `messages` ending with a user turn."""
    if "messages" in row:
        try:
            messages = [m.as_dict() for m in parse_messages(row["messages"], "messages", "message")]
        except RecordProblem as err:
            raise LmforgeError(f"{where}: {err}") from None
        if messages[-1]["role"] == "assistant":
            raise LmforgeError(f"{where}: the last message is the assistant's; expected the messages before the reply")
        return messages
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise LmforgeError(f"{where}: the row has no `prompt` (a string) or `messages` (a list); expected one of them")
    return [{"role": "user", "content": prompt}]


def _answer(row: dict[str, Any], choices: list[str], where: str) -> int:
    answer = row.get("answer")
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
    if isinstance(answer, str) and len(answer) == 1 and answer.upper() in letters:
        return letters.index(answer.upper())
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    raise LmforgeError(
        f"{where}: `answer` {answer!r} names no choice; expected an index 0..{len(choices) - 1} or a letter "
        f"{letters[0]}..{letters[-1]}"
    )


def _rows(path: Path, limit: int | None):
    count = 0
    for where, row in iter_rows(Source(path=str(path))):
        if limit is not None and count >= limit:
            return
        count += 1
        yield where, row
    if not count:
        raise LmforgeError(f"{path}: the file holds no rows; expected one JSON object per line")
