from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.recipe import DataSource
from lmforge.data.readers import MAX_PROBLEMS, read_source
from lmforge.data.records import Conversation, Message, Text
from lmforge.errors import LmforgeError

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                     {"role": "assistant", "content": "Bye."}]}
SHORT = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}


def write_lines(path: Path, lines: list) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path, stage: str = "sft", fmt: str = "auto"):
    return read_source(DataSource(path=str(path), format=fmt), stage)


def error_of(path: Path, stage: str = "sft", fmt: str = "auto") -> str:
    with pytest.raises(LmforgeError) as err:
        read(path, stage, fmt)
    return str(err.value)


def test_messages_jsonl_reads_conversations_with_file_line_sources(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [CHAT, "", "   ", SHORT])
    convs = read(path)
    assert convs == [
        Conversation([Message(**m) for m in CHAT["messages"]], source=f"{path}:1"),
        Conversation([Message("user", "2+2?"), Message("assistant", "4")], source=f"{path}:4"),
    ]
    assert convs[1].as_dicts() == SHORT["messages"]


def test_text_jsonl_reads_texts(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [{"text": "one"}, {"text": "two", "id": 7}])
    assert read(path, stage="pt") == [Text("one", f"{path}:1"), Text("two", f"{path}:2")]
    assert read(path, stage="pt", fmt="text") == read(path, stage="pt")


def test_json_file_holding_a_list(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([SHORT, CHAT]), encoding="utf-8")
    convs = read(path)
    assert [c.source for c in convs] == [f"{path}: record 1", f"{path}: record 2"]
    assert convs[0].messages[-1].content == "4"


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SHORT).encode() + b"\n")
    assert len(read(path)) == 1


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"messages": [{"role": "user", "content": "a"}, {"role": "asistant", "content": "b"}]},
         'message 1 has role "asistant"; expected one of system, user, assistant'),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
         "message 1 (assistant) has empty content; expected the reply text"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]},
         'message 0 has no "content"'),
        ({"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]},
         "message 0 (user) has content a list; expected a string"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
         "message 1 has role user after a user message; expected assistant"),
        ({"messages": [{"role": "assistant", "content": "a"}]},
         "message 0 has role assistant first; expected user"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                       {"role": "assistant", "content": "b"}]},
         "message 1 has role system after a user message; expected assistant"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}]},
         "the last message (message 2) has role user; expected assistant"),
        ({"messages": []}, '"messages" is a list; expected a non-empty list'),
        ({"messages": "hi"}, '"messages" is a string; expected a non-empty list'),
        ({"messages": [{"role": "user", "content": "a", "name": "x"}, {"role": "assistant", "content": "b"}]},
         'message 0 has key "name", which lmforge does not read yet'),
        ({"prompt": "a", "completion": "b"}, 'no "messages" key (keys: prompt, completion); expected format messages'),
        (["not", "an", "object"], "the record is a list; expected a JSON object"),
    ],
)
def test_bad_conversation_is_reported_with_file_and_line(tmp_path, record, expected):
    path = write_lines(tmp_path / "train.jsonl", [SHORT, "", record])
    message = error_of(path)
    assert message.startswith(f"{path}:3: ")
    assert expected in message


def test_malformed_json_line(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [SHORT, '{"messages": [', SHORT])
    assert error_of(path).startswith(f"{path}:2: not valid JSON (")


def test_non_utf8_byte_names_line_and_column(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "tea"}\n{"text": "caf\xe9"}\n')
    assert error_of(path, stage="pt") == (
        f"{path}:2: byte 0xe9 at column 14 is not valid UTF-8; expected UTF-8 text (re-encode the file)"
    )


def test_many_problems_listed_up_to_the_limit(tmp_path):
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}
    path = write_lines(tmp_path / "train.jsonl", [SHORT] + [bad] * (MAX_PROBLEMS + 5))
    lines = error_of(path).splitlines()
    bad_count, total = MAX_PROBLEMS + 5, MAX_PROBLEMS + 6
    assert lines[0] == f"{path}: {bad_count} bad records of {total} (first {MAX_PROBLEMS} shown); fix them:"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [f"{path}:{k}" for k in range(2, MAX_PROBLEMS + 2)]


def test_auto_detection_unknown_keys_lists_formats_and_keys(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [{"instruction": "a", "output": "b"}] * 3)
    message = error_of(path)
    assert message.startswith(f"{path}:1: cannot tell the format from the keys instruction, output; expected one of:")
    assert "messages (" in message and "text (" in message
    assert ":2:" not in message  # one line is enough when no format is known


def test_format_must_fit_the_stage(tmp_path):
    chat = write_lines(tmp_path / "chat.jsonl", [SHORT])
    corpus = write_lines(tmp_path / "corpus.jsonl", [{"text": "a"}])
    assert "format messages feeds stage sft, but the recipe has stage pt; expected format text" in error_of(chat, "pt")
    assert "format text feeds stage pt, but the recipe has stage sft" in error_of(corpus, "sft")
    assert "format text feeds stage pt" in error_of(chat, "sft", fmt="text")


def test_explicit_format_reports_the_missing_key(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [{"text": "a"}, {"body": "b"}, {"text": ""}])
    message = error_of(path, "pt", fmt="text")
    assert f'{path}:2: no "text" key (keys: body); expected format text' in message
    assert f'{path}:3: "text" is empty' in message


def test_missing_file_wrong_extension_and_empty_file(tmp_path):
    assert error_of(tmp_path / "nope.jsonl") == (
        f"data file {tmp_path / 'nope.jsonl'} does not exist; check data.train / data.eval.path in the recipe"
    )
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    assert "has extension '.csv'; expected one of .jsonl, .json" in error_of(csv)
    empty = write_lines(tmp_path / "empty.jsonl", ["", ""])
    assert "holds no records" in error_of(empty)
    assert "is not a file" in error_of(tmp_path)


def test_json_file_must_hold_a_list(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(SHORT))
    assert "holds an object; expected a list of records" in error_of(path)
