from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lmforge.commands.data_files import as_messages, data_kind, run_convert, run_split, run_validate
from lmforge.config.settings import Source
from lmforge.data.sources.mixing import eval_indices
from lmforge.data.sources.read import read_source
from lmforge.errors import LmforgeError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


ALPACA = [
    {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "You add."},
    {"instruction": "Greet", "input": "", "output": "Hello!", "history": [["Hi", "Hey"]]},
]
SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
            {"from": "observation", "value": "rain"},
            {"from": "gpt", "value": "It rains."},
        ],
        "tools": '[{"name": "weather", "description": "the weather", "parameters": {"type": "object"}}]',
    }
]


UNTRAINED_TURN = [
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "not trained", "loss_weight": 0.0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "trained", "loss_weight": 1.0},
        ]
    }
]


@pytest.mark.parametrize(
    "name, rows", [("alpaca.json", ALPACA), ("sharegpt.json", SHAREGPT), ("weights.json", UNTRAINED_TURN)]
)
def test_convert_to_messages_keeps_the_conversations(tmp_path, name, rows):
    src = write(tmp_path / name, json.dumps(rows))
    run_convert(str(src), tmp_path / "out.jsonl")
    before = read_source(Source(path=str(src)), "conversation").records
    after = read_source(Source(path=str(tmp_path / "out.jsonl"), format="messages"), "conversation").records
    assert [(c.messages, c.tools) for c in after] == [(c.messages, c.tools) for c in before]
    assert [m.trained for c in after for m in c.messages] == [m.trained for c in before for m in c.messages]


def test_convert_preference_and_kto_shapes(tmp_path):
    pref = write(tmp_path / "pref.jsonl", json.dumps({"prompt": "2 or 3?", "chosen": "3", "rejected": "2"}) + "\n")
    kto = write(tmp_path / "kto.jsonl", json.dumps({"prompt": "2+2?", "completion": "5", "label": False}) + "\n")
    run_convert(str(pref), tmp_path / "p.jsonl")
    run_convert(str(kto), tmp_path / "k.jsonl")
    assert json.loads((tmp_path / "p.jsonl").read_text()) == {
        "prompt": [{"role": "user", "content": "2 or 3?"}],
        "chosen": [{"role": "assistant", "content": "3"}],
        "rejected": [{"role": "assistant", "content": "2"}],
    }
    assert json.loads((tmp_path / "k.jsonl").read_text()) == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "5"}],
        "label": False,
    }
    for out, kind in ((tmp_path / "p.jsonl", "preference"), (tmp_path / "k.jsonl", "kto")):
        assert data_kind(Source(path=str(out))) == kind
        assert read_source(Source(path=str(out)), kind).records  # what convert writes reads back


def test_convert_refuses_plain_text_and_other_targets(tmp_path):
    text = write(tmp_path / "t.jsonl", '{"text": "a document"}\n')
    with pytest.raises(LmforgeError, match="plain text has no roles"):
        run_convert(str(text), tmp_path / "o.jsonl")
    with pytest.raises(LmforgeError, match="only target format is messages"):
        run_convert(str(text), tmp_path / "o.jsonl", to="sharegpt")


BAD = (
    "\n".join(
        [
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
            '{"messages": [oops',
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "asistant", "content": "yo"}]}',
            "",
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}',
        ]
    )
    + "\n"
)


def test_validate_lists_every_problem_with_its_line(tmp_path):
    bad = write(tmp_path / "bad.jsonl", BAD)
    out = io.StringIO()
    assert run_validate(str(bad), stream=out) == 1
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[0] for line in lines[:3]] == [f"{bad}:2", f"{bad}:3", f"{bad}:5"]
    assert '"asistant"' in lines[1] and "empty" in lines[2]
    assert lines[3] == f"{bad}: 3 of 4 records have problems (1 malformed line, 1 bad value, 1 empty assistant content)"
    good = write(tmp_path / "good.jsonl", BAD.splitlines()[0] + "\n")
    out = io.StringIO()
    assert run_validate(str(good), stream=out) == 0 and "all 1 records are valid" in out.getvalue()
    out = io.StringIO()
    assert run_validate(str(tmp_path / "missing.jsonl"), stream=out) == 1 and "does not exist" in out.getvalue()


def test_validate_names_the_column_of_a_json_error(tmp_path):
    """The column where the JSON goes wrong, not 1: json counted the line's newline as the end of the document."""
    bad = write(tmp_path / "cols.jsonl", '{"messages": []} x\n{"messages": [\n')
    out = io.StringIO()
    assert run_validate(str(bad), stream=out) == 1
    text = out.getvalue()
    assert f"{bad}:1: not valid JSON (Extra data at column 18)" in text
    assert f"{bad}:2: not valid JSON (Expecting value at the end of the line, column 15)" in text


def test_split_is_seeded_disjoint_and_matches_the_recipe_split(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"a{k}"}]}
        for k in range(20)
    ]
    src = write(tmp_path / "all.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    run_split(str(src), 0.25, 7, tmp_path / "s")
    train = [json.loads(line) for line in (tmp_path / "s" / "train.jsonl").read_text().splitlines()]
    evaluation = [json.loads(line) for line in (tmp_path / "s" / "eval.jsonl").read_text().splitlines()]
    assert (len(train), len(evaluation)) == (15, 5)
    chosen = eval_indices(20, 0.25, 7)  # what data.eval.fraction 0.25 with data.seed 7 takes
    assert evaluation == [rows[i] for i in sorted(chosen)]
    assert train == [r for i, r in enumerate(rows) if i not in chosen]
    run_split(str(src), 0.25, 7, tmp_path / "again")
    assert (tmp_path / "again" / "eval.jsonl").read_text() == (tmp_path / "s" / "eval.jsonl").read_text()
    with pytest.raises(LmforgeError, match="between 0 and 1"):
        run_split(str(src), 1.5, 7, tmp_path / "x")


def test_as_messages_keeps_tool_calls_and_tools(tmp_path):
    src = write(tmp_path / "sg.json", json.dumps(SHAREGPT))
    (record,) = read_source(Source(path=str(src)), "conversation").records
    out = as_messages(record)
    assert out["tools"] and out["messages"][1]["tool_calls"][0]["function"]["name"] == "weather"
    assert out["messages"][2]["role"] == "tool"
