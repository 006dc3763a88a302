from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.settings import Source
from lmforge.data.records import Conversation, Message, Text
from lmforge.data.sources.read import KIND_BY_STAGE, MAX_PROBLEMS, SourceRead, read_source
from lmforge.errors import LmforgeError

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye."},
    ]
}
SHORT = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}


def write_lines(path: Path, lines: list) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def read(path: Path, stage: str = "sft", fmt: str = "auto"):
    return read_source(Source(path=str(path), format=fmt), KIND_BY_STAGE[stage]).records


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
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "asistant", "content": "b"}]},
            'message 1 has role "asistant"; expected one of system, user, assistant',
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
            "message 1 (assistant) has empty content; expected the reply text",
        ),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}, 'message 0 has no "content"'),
        (
            {"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]},
            'message 0 content[0] is a string; expected a part {"type": "text", "text": ...}',
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "message 1 has role user after a user message; expected assistant",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "message 0 has role assistant first; expected user"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "b"},
                ]
            },
            "message 1 has role system after a user message; expected assistant",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "the last message (message 2) has role user; expected assistant",
        ),
        ({"messages": []}, '"messages" is a list; expected a non-empty list'),
        ({"messages": "hi"}, '"messages" is a string; expected a non-empty list'),
        (
            {"messages": [{"role": "user", "content": "a", "weight": 0}, {"role": "assistant", "content": "b"}]},
            'message 0 has key "weight", which lmforge does not read yet',
        ),
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
    assert lines[0] == (
        f"{path}: {bad_count} bad records of {total} (first {MAX_PROBLEMS} shown); fix them, "
        "or set data.on_error: skip to skip and count them:"
    )
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [f"{path}:{k}" for k in range(2, MAX_PROBLEMS + 2)]


def test_auto_detection_unknown_keys_lists_formats_and_keys(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [{"question": "a", "answer": "b"}] * 3)
    message = error_of(path)
    assert message.startswith(f"{path}:1: cannot tell the format from the keys question, answer; expected one of:")
    assert "messages (" in message and "sharegpt (" in message and "alpaca (" in message
    assert ":2:" not in message  # one line is enough when no format is known


def test_format_must_fit_the_stage(tmp_path):
    chat = write_lines(tmp_path / "chat.jsonl", [SHORT])
    corpus = write_lines(tmp_path / "corpus.jsonl", [{"text": "a"}])
    assert (
        "format messages gives conversation or preference or kto records, but text records are needed here; "
        "expected format alpaca or text (or change `stage`)" in error_of(chat, "pt")
    )
    assert (
        "format text gives text records, but conversation records are needed here; expected format messages "
        "or sharegpt or alpaca" in error_of(corpus, "sft")
    )
    assert "format text gives text records" in error_of(chat, "sft", fmt="text")


def test_alpaca_records_are_pretraining_documents_only_when_asked(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [{"instruction": "Q", "input": "", "output": "A"}])
    assert error_of(path, "pt") == (
        f"{path}:1: the keys instruction, input, output look like format alpaca, which gives text records only "
        "when asked: set data.train[].format: alpaca (each record one document: instruction, input and output "
        "joined by newlines)"
    )
    assert read(path, "pt", fmt="alpaca") == [Text("Q\nA", f"{path}:1")]


def test_explicit_format_reports_the_missing_key(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [{"text": "a"}, {"body": "b"}, {"text": ""}])
    message = error_of(path, "pt", fmt="text")
    assert f'{path}:2: no "text" key (keys: body); expected format text' in message
    assert f'{path}:3: "text" is empty' in message


def test_missing_file_wrong_extension_and_empty_file(tmp_path):
    assert error_of(tmp_path / "nope.jsonl") == (
        f"data file {tmp_path / 'nope.jsonl'} does not exist; check data.train / data.eval.path in the recipe"
    )
    tsv = tmp_path / "data.tsv"
    tsv.write_text("a\tb\n")
    assert "has extension '.tsv'; expected one of .jsonl, .json, .parquet, .csv, .txt" in error_of(tsv)
    empty = write_lines(tmp_path / "empty.jsonl", ["", ""])
    assert "holds no records" in error_of(empty)
    (tmp_path / "empty_dir").mkdir()
    assert "holds no data files" in error_of(tmp_path / "empty_dir")


def test_json_file_must_hold_a_list(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(SHORT))
    assert "holds an object; expected a list of records" in error_of(path)


# -- strict vs skip: every bad-input case names where, the field and what was expected -------------------------

BAD_CASES = [
    ('{"messages": [', "malformed line", "not valid JSON (", "expected one JSON object per line"),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]},
        "missing field",
        'message 1 has no "content"',
        'expected an object with "role" and "content"',
    ),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        "wrong role order",
        "message 1 has role user after a user message",
        "expected assistant",
    ),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]},
        "empty assistant content",
        "message 1 (assistant) has empty content",
        "expected the reply text",
    ),
    (
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
        "non-UTF-8 byte",
        "byte 0xe9 at column 47",
        "expected UTF-8 text",
    ),
    ({"prompt": "a"}, "missing field", 'no "messages" key (keys: prompt)', "expected format messages"),
]


def write_case(path: Path, bad) -> Path:
    lines = [
        json.dumps(SHORT).encode(),
        bad if isinstance(bad, bytes) else (bad if isinstance(bad, str) else json.dumps(bad)).encode(),
        json.dumps(SHORT).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("bad, category, field, expected", BAD_CASES, ids=[c[1] for c in BAD_CASES])
def test_bad_input_strict_names_line_field_and_expected(tmp_path, bad, category, field, expected):
    path = write_case(tmp_path / "train.jsonl", bad)
    with pytest.raises(LmforgeError) as err:
        read_source(Source(path=str(path)), "conversation")
    message = str(err.value)
    assert message.startswith(f"{path}:2: ") and field in message and expected in message


@pytest.mark.parametrize("bad, category, field, expected", BAD_CASES, ids=[c[1] for c in BAD_CASES])
def test_bad_input_skip_returns_a_counted_reject(tmp_path, bad, category, field, expected):
    path = write_case(tmp_path / "train.jsonl", bad)
    result = read_source(Source(path=str(path)), "conversation", on_error="skip")
    assert isinstance(result, SourceRead)
    assert [r.source for r in result.records] == [f"{path}:1", f"{path}:3"]
    [reject] = result.rejects
    assert (reject.source, reject.category) == (f"{path}:2", category)
    assert field in reject.reason and expected in reject.reason
    json.dumps(reject.raw)  # the rejects file can hold it
    if isinstance(bad, dict):
        assert reject.raw == bad


def test_unknown_format_strict_stops_at_the_first_record_skip_rejects_until_one_is_known(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [{"question": "a"}, {"question": "b"}, SHORT, {"question": "c"}])
    with pytest.raises(LmforgeError) as err:
        read_source(Source(path=str(path)), "conversation")
    assert str(err.value).startswith(f"{path}:1: cannot tell the format from the keys question; expected one of:")
    result = read_source(Source(path=str(path)), "conversation", on_error="skip")
    assert [r.source for r in result.records] == [f"{path}:3"]
    assert [(r.source.rsplit(":", 1)[1], r.category) for r in result.rejects] == [
        ("1", "unknown format"),
        ("2", "unknown format"),
        ("4", "missing field"),
    ]


def test_skip_with_every_record_bad_still_stops(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [{"messages": "x"}, {"messages": []}])
    with pytest.raises(LmforgeError, match=r"all 2 records were rejected, so nothing is left to train on"):
        read_source(Source(path=str(path)), "conversation", on_error="skip")


def test_strict_lists_problems_of_several_files_with_the_source_label(tmp_path):
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}
    write_lines(tmp_path / "a.jsonl", [SHORT, bad])
    write_lines(tmp_path / "b.jsonl", [bad, SHORT])
    with pytest.raises(LmforgeError) as err:
        read_source(Source(path=str(tmp_path)), "sft")
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{tmp_path}: 2 bad records of 4; fix them")
    assert [line.strip().split(": ")[0] for line in lines[1:]] == [
        f"{tmp_path / 'a.jsonl'}:2",
        f"{tmp_path / 'b.jsonl'}:1",
    ]


def test_stage_names_are_accepted_as_kinds(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"text": "a"}])
    source = Source(path=str(path))
    assert read_source(source, "pt").records == read_source(source, "text").records
    with pytest.raises(ValueError):
        read_source(Source(path=str(path)), "nonsense")
    with pytest.raises(ValueError):
        read_source(Source(path=str(path)), "text", on_error="ignore")


def test_every_stage_of_a_recipe_names_a_record_kind():
    from typing import get_args

    from lmforge.config.recipe import Recipe

    stages = get_args(Recipe.model_fields["stage"].annotation)
    assert stages and set(stages) == set(KIND_BY_STAGE)


def test_iter_rows_yields_raw_rows_lazily(tmp_path):
    from lmforge.data.sources.read import iter_rows

    path = write_lines(tmp_path / "rows.jsonl", [{"a": 1}, "", {"b": 2}, "{oops"])
    rows = iter_rows(Source(path=str(path)))
    assert next(rows) == (f"{path}:1", {"a": 1})
    assert next(rows) == (f"{path}:3", {"b": 2})
    with pytest.raises(LmforgeError, match=rf"{path}:4: not valid JSON"):
        next(rows)
