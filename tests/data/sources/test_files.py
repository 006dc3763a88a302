from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.config.settings import Source
from lmforge.data.records import Message, Text, ToolCall
from lmforge.data.sources.files import resolve_files
from lmforge.data.sources.read import iter_rows, read_source
from lmforge.errors import LmforgeError

SHORT = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}


def jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read(path, kind: str = "conversation", **kw):
    return read_source(Source(path=str(path), **kw), kind).records


def test_jsonl_rows_are_read_lazily(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n" + "{broken\n")
    rows = iter_rows(Source(path=str(path)))
    assert next(rows) == (f"{path}:1", {"text": "a"})  # the bad line 2 is not read yet


def test_json_list_and_json_lines_in_a_json_file(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    assert read(listed, "text") == [Text("a", f"{listed}: record 1"), Text("b", f"{listed}: record 2")]
    lines = jsonl(tmp_path / "lines.json", [{"text": "a"}, {"text": "b"}])
    assert [t.source for t in read(lines, "text")] == [f"{lines}:1", f"{lines}:2"]


def test_json_file_with_bad_bytes_or_bad_json_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[\n{"text": "a"},\n{"text": "caf\xe9"}\n]')
    with pytest.raises(LmforgeError, match=rf"{path}:3: byte 0xe9 is not valid UTF-8"):
        read(path, "text")
    path.write_text('[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(LmforgeError, match=rf"{path}:3: not valid JSON"):
        read(path, "text")


def test_parquet_with_nested_messages_and_tool_calls(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "hi", "tool_calls": None},
                {"role": "assistant", "content": "hello", "tool_calls": None},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "weather?", "tool_calls": None},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": '{"c": "Oslo"}'}}],
                },
                {"role": "tool", "content": "rain", "tool_calls": None},
                {"role": "assistant", "content": "It rains.", "tool_calls": None},
            ]
        },
    ]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    convs = read(path)
    assert [c.source for c in convs] == [f"{path}: row 1", f"{path}: row 2"]
    assert convs[0].messages == [Message("user", "hi"), Message("assistant", "hello")]
    assert convs[1].messages[1] == Message("assistant", "", tool_calls=[ToolCall("get", {"c": "Oslo"})])
    assert convs[1].messages[2] == Message("tool", "rain")


def test_parquet_is_read_in_batches(tmp_path, monkeypatch):
    from lmforge.data.sources import files

    monkeypatch.setattr(files, "PARQUET_BATCH", 2)
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": f"doc {i}"} for i in range(5)]), path)
    assert [t.text for t in read(path, "text")] == [f"doc {i}" for i in range(5)]


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    with pytest.raises(LmforgeError, match="not a readable Parquet file"):
        read(path, "text")


def test_csv_alpaca_with_a_quoted_multiline_cell_and_line_numbers(tmp_path):
    path = tmp_path / "alpaca.csv"
    path.write_bytes(b'\xef\xbb\xbfinstruction,input,output\nAdd,"1\n+ 2",3\nName a colour,,Blue\n')
    convs = read(path)
    assert [c.source for c in convs] == [f"{path}:2", f"{path}:4"]
    assert convs[0].messages == [Message("user", "Add\n1\n+ 2"), Message("assistant", "3")]
    assert convs[1].messages[0].content == "Name a colour"


def test_csv_bad_rows_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'text\n"ok"\n"two","fields"\n"caf\xe9"\n"multi\nline caf\xe9"\n')
    with pytest.raises(LmforgeError) as err:
        read(path, "text")
    lines = str(err.value).splitlines()
    assert f"{path}:3: the row has 2 fields; expected 1 as in the header (text)" in lines[1]
    assert f"{path}:4: byte 0xe9 at column 5 is not valid UTF-8" in lines[2]
    assert f"{path}:5: line 6: byte 0xe9 at column 9 is not valid UTF-8" in lines[3]
    result = read_source(Source(path=str(path)), "text", on_error="skip")
    assert [t.text for t in result.records] == ["ok"]
    assert [r.category for r in result.rejects] == ["malformed line", "non-UTF-8 byte", "non-UTF-8 byte"]


def test_csv_kto_labels_are_words(tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nhi,hello,true\nhi,go away,False\n")
    examples = read(path, "kto")
    assert [e.label for e in examples] == [True, False]


def test_directory_reads_every_data_file_sorted_skipping_hidden_and_registry(tmp_path):
    jsonl(tmp_path / "b.jsonl", [SHORT])
    jsonl(
        tmp_path / "a" / "part.jsonl",
        [{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}],
    )
    (tmp_path / "c.csv").write_text("instruction,output\nq,r\n")
    jsonl(tmp_path / ".cache" / "x.jsonl", [{"junk": 1}])
    (tmp_path / "dataset_info.json").write_text("{}")
    assert resolve_files(str(tmp_path)) == [tmp_path / "a" / "part.jsonl", tmp_path / "b.jsonl", tmp_path / "c.csv"]
    convs = read(tmp_path)  # the format is told per file
    assert [c.messages[-1].content for c in convs] == ["y", "4", "r"]


def test_text_files_are_one_document_a_line_and_blank_lines_are_counted(tmp_path, capsys):
    corpus = tmp_path / "wiki.txt"
    corpus.write_bytes(b"\xef\xbb\xbfFirst document.\n\nSecond, with CRLF.\r\n   \nThird\rFourth (old Mac break)\nLast")
    assert read(corpus, "text") == [
        Text("First document.", f"{corpus}:1"),
        Text("Second, with CRLF.", f"{corpus}:3"),
        Text("Third", f"{corpus}:5"),
        Text("Fourth (old Mac break)", f"{corpus}:5"),
        Text("Last", f"{corpus}:6"),
    ]
    assert capsys.readouterr().err == f"lmforge: data: {corpus}: 2 blank lines skipped (one document a line)\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad \xff byte\n")
    got = read_source(Source(path=str(bad)), "text", on_error="skip")
    assert [t.text for t in got.records] == ["fine"] and got.rejects[0].source == f"{bad}:2"
    with pytest.raises(LmforgeError, match="format text gives text records, but conversation records are needed"):
        read(corpus, "conversation")


def test_text_files_and_record_files_do_not_mix_under_one_path(tmp_path):
    jsonl(tmp_path / "chat.jsonl", [SHORT])
    (tmp_path / "notes.txt").write_text("not data\n")
    with pytest.raises(LmforgeError) as err:
        resolve_files(str(tmp_path))
    assert f"holds plain-text files ({tmp_path / 'notes.txt'}: one document a line) and record files" in str(err.value)
    assert resolve_files(str(tmp_path / "*.jsonl")) == [tmp_path / "chat.jsonl"]
    (tmp_path / "chat.jsonl").unlink()
    assert resolve_files(str(tmp_path)) == [tmp_path / "notes.txt"]


def test_glob_and_base_dir(tmp_path):
    jsonl(tmp_path / "d" / "x1.jsonl", [{"text": "1"}])
    jsonl(tmp_path / "d" / "x2.jsonl", [{"text": "2"}])
    jsonl(tmp_path / "d" / "y.jsonl", [{"text": "3"}])
    assert [t.text for t in read(tmp_path / "d" / "x*.jsonl", "text")] == ["1", "2"]
    assert [t.text for t in read_source(Source(path="d/**/*.jsonl"), "text", base_dir=tmp_path).records] == [
        "1",
        "2",
        "3",
    ]
    with pytest.raises(LmforgeError, match=r"matches no data file"):
        read(tmp_path / "d" / "z*.jsonl", "text")


def test_relative_paths_default_to_the_working_directory(tmp_path, monkeypatch):
    jsonl(tmp_path / "t.jsonl", [{"text": "a"}])
    monkeypatch.chdir(tmp_path)
    assert read_source(Source(path="t.jsonl"), "text").records == [Text("a", "t.jsonl:1")]


def test_hub_dataset_goes_through_load_dataset(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reachability check of the Hub (test_hub.py)

    calls = []

    def fake_load(name, subset, split, streaming):
        calls.append((name, subset, split, streaming))
        return [{"instruction": "q", "output": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    convs = read_source(Source(hub="org/data", subset="en", split="train"), "conversation").records
    assert calls == [("org/data", "en", "train", False)]
    assert convs[0].source == "hub:org/data/en[train]: row 1"


def test_hub_failure_is_an_lmforge_error(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reachability check of the Hub (test_hub.py)

    def fail(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(LmforgeError, match=r"cannot load hub dataset org/data\[train\]: ConnectionError: offline"):
        read_source(Source(hub="org/data"), "conversation")
