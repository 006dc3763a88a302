"""The keys of a row that its format does not read: refused where leaving them out would change what is trained,
counted and said otherwise.

Refused, each with why:
- media (images, videos, audios, image, ...): lmforge trains text-only models, and the <image> placeholders the
  text holds would be trained as text;
- a key the same format reads for another stage, whose loss changes the training: a KTO label (true/false) in
  data read as conversations or pairs (every completion would be trained, the undesirable ones too), chosen or
  rejected replies outside preference stages, and a system prompt or tool schemas the prompt would lose.
Any other key (id, source, category, url, ...: common in hub data) is left out of training and counted by name,
and the reader says the counts (`unread_line`); a null or empty value holds nothing and is not counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lmforge.config.settings import Source
from lmforge.data.sources.problems import MEDIA, NOT_READ, RecordProblem
from lmforge.data.sources.row import Format, Row

MEDIA_KEYS = ("images", "videos", "audios", "image", "video", "audio")

# canonical column -> why leaving it out would change what is trained (where the format does not read it)
LOST = {
    "label": "a KTO label (desirable or not), which {what} do not read: every completion would be trained, the "
    "undesirable ones too; use stage kto, or keep only the desirable records and remove the key",
    "chosen": "a preferred reply, which {what} do not read; use a preference stage (rm, dpo, simpo, orpo)",
    "rejected": "a rejected reply, which {what} do not read; use a preference stage (rm, dpo, simpo, orpo)",
    "system": "a system prompt, which {what} do not read, so the prompt would lose it; put it first in the "
    'messages (role "system"), or use format sharegpt or alpaca, which read it',
    "tools": "tool schemas, which {what} do not read, so the prompt would lose them; remove the key if no "
    "message calls a tool",
}
WHAT = {"conversation": "conversations", "preference": "preference pairs", "kto": "KTO examples", "text": "documents"}


def check_keys(obj: dict[str, Any], fmt: Format, source: Source, kind: str) -> None:
    """Raise for a media key, or for a key whose loss would change what is trained (the module docstring)."""
    row = Row(obj, fmt, source.columns, source.tags)
    read = _read_keys(row, kind)
    for key in MEDIA_KEYS:
        if key not in read and _holds(obj.get(key)):
            raise RecordProblem(
                f'the record has "{key}": media inputs, which lmforge cannot read as it trains text-only models '
                "(a placeholder such as <image> would be trained as text); remove the record, or the key and "
                "its placeholders",
                MEDIA,
            )
    if kind == "text":
        return
    for canonical, why in LOST.items():
        key = row.key(canonical)
        if canonical in fmt.reads[kind] or key in read or not _holds(obj.get(key)):
            continue
        if canonical == "label" and not _is_label(obj[key]):
            continue
        what = f"{WHAT[kind]} in format {fmt.name}"
        raise RecordProblem(f"{row.field(canonical)} is {why.format(what=what)}", NOT_READ)


def unread_keys(obj: dict[str, Any], fmt: Format, source: Source, kind: str) -> list[str]:
    """The keys of the record that hold something and that the format does not read for `kind`."""
    read = _read_keys(Row(obj, fmt, source.columns, source.tags), kind)
    return [key for key, value in obj.items() if key not in read and _holds(value)]


def unread_line(label: str, counts: Counter) -> str:
    """How the reader says the keys it left out of training, e.g. for data/chat.jsonl with ids."""
    keys = ", ".join(f"{key} ({n:,} record{'s' if n != 1 else ''})" for key, n in counts.most_common())
    return (
        f"lmforge: data: {label}: not read, so not trained on: {keys}; if one holds training data, map it with "
        "data.train[].columns"
    )


def _read_keys(row: Row, kind: str) -> set[str]:
    return {row.key(canonical) for canonical in row.fmt.reads[kind]}


def _holds(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _is_label(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))
