"""Keys a format does not read: refused where leaving them out would change the training, else counted and said."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lmforge.config.settings import Source
from lmforge.data.sources.problems import MEDIA, NOT_READ
from lmforge.data.sources.read import read_source
from lmforge.errors import LmforgeError

TURNS = [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat."}]
SHAREGPT = [{"from": "human", "value": "<image>What is this?"}, {"from": "gpt", "value": "A cat."}]


def write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def error_of(tmp_path: Path, row: dict, kind: str = "conversation", **source) -> str:
    path = write(tmp_path, [row])
    with pytest.raises(LmforgeError) as err:
        read_source(Source(path=str(path), **source), kind)
    message = str(err.value)
    assert message.startswith(f"{path}:1: ")
    return message


@pytest.mark.parametrize(
    "row, kind",
    [
        ({"messages": TURNS, "images": ["cat.jpg"]}, "conversation"),
        ({"conversations": SHAREGPT, "videos": ["cat.mp4"]}, "conversation"),
        ({"instruction": "<image>What is this?", "output": "A cat.", "image": "cat.jpg"}, "conversation"),
        ({"prompt": "<audio>Who speaks?", "chosen": "Ann.", "rejected": "Bob.", "audios": ["a.wav"]}, "preference"),
        ({"text": "<image> a cat", "images": ["cat.jpg"]}, "text"),
    ],
)
def test_media_keys_are_refused_in_every_format(tmp_path, row, kind):
    [key] = [k for k in row if k in ("images", "videos", "audios", "image")]
    message = error_of(tmp_path, row, kind)
    assert f'the record has "{key}": media inputs, which lmforge cannot read as it trains text-only models' in message
    path = write(tmp_path, [row, {**row, key: []}])
    got = read_source(Source(path=str(path)), kind, on_error="skip")
    assert [r.category for r in got.rejects] == [MEDIA] and len(got.records) == 1  # an empty list holds no media


@pytest.mark.parametrize(
    "row, kind, source, expected",
    [
        (
            {"messages": TURNS, "label": False},
            "conversation",
            {},
            '"label" is a KTO label (desirable or not), which conversations in format messages do not read: every '
            "completion would be trained, the undesirable ones too; use stage kto",
        ),
        (
            {"msgs": SHAREGPT, "kto_tag": "false"},
            "conversation",
            {"format": "sharegpt", "columns": {"conversations": "msgs", "label": "kto_tag"}},
            '"kto_tag" (mapped from label by data.train[].columns) is a KTO label',
        ),
        (
            {"instruction": "Q", "output": "A", "chosen": "B"},
            "conversation",
            {},
            '"chosen" is a preferred reply, which conversations in format alpaca do not read; use a preference stage',
        ),
        (
            {"messages": TURNS, "system": "Be brief."},
            "conversation",
            {},
            '"system" is a system prompt, which conversations in format messages do not read, so the prompt would '
            'lose it; put it first in the messages (role "system")',
        ),
        (
            {"prompt": "Q", "chosen": "A", "rejected": "B", "system": "Be brief."},
            "preference",
            {},
            '"system" is a system prompt, which preference pairs in format preference do not read',
        ),
        (
            {"prompt": "Q", "completion": "A", "label": True, "tools": [{"name": "f"}]},
            "kto",
            {},
            '"tools" is tool schemas, which KTO examples in format kto do not read, so the prompt would lose them',
        ),
    ],
)
def test_keys_whose_loss_would_change_the_training_are_refused(tmp_path, row, kind, source, expected):
    assert expected in error_of(tmp_path, row, kind, **source)
    key = expected.split('"')[1]
    without = {k: v for k, v in row.items() if k != key}
    got = read_source(Source(path=str(write(tmp_path, [row, without])), **source), kind, on_error="skip")
    assert [r.category for r in got.rejects] == [NOT_READ] and len(got.records) == 1


def test_other_keys_are_read_on_counted_and_said(tmp_path, capsys):
    rows = [
        {"id": "a1", "messages": TURNS, "source": "web", "label": "animals"},  # not a KTO label: a category
        {"id": "a2", "messages": TURNS, "source": None, "category": ""},  # null and empty hold nothing
    ]
    path = write(tmp_path, rows)
    got = read_source(Source(path=str(path)), "conversation")
    assert len(got.records) == 2 and got.unread == Counter({"id": 2, "source": 1, "label": 1})
    assert capsys.readouterr().err == (
        f"lmforge: data: {path}: not read, so not trained on: id (2 records), source (1 record), label (1 record); "
        "if one holds training data, map it with data.train[].columns\n"
    )
    text = write(tmp_path, [{"text": "doc", "url": "u", "label": True}])
    assert read_source(Source(path=str(text)), "text").unread == Counter({"url": 1, "label": 1})


def test_mapped_keys_and_keys_of_the_format_are_read_and_not_reported(tmp_path, capsys):
    row = {"conv": SHAREGPT, "system": "Be brief.", "tools": []}
    got = read_source(Source(path=str(write(tmp_path, [row])), columns={"conversations": "conv"}), "conversation")
    assert got.unread == Counter() and capsys.readouterr().err == ""
