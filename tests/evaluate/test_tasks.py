"""Task specifications: inline forms, task files (one task or several, paths relative to the file), and the
messages bad ones get."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import LmforgeError
from lmforge.evaluate.rows import choice_rows, prompt_rows
from lmforge.evaluate.tasks import parse_tasks


def test_inline_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "held.jsonl").write_text('{"text": "a"}\n')
    ppl, gen, gen2, harness = parse_tasks(
        ["perplexity:held.jsonl", "generate:held.jsonl", "generate:held.jsonl", "lm-eval:a,b"]
    )
    assert (ppl.type, ppl.name, ppl.data) == ("perplexity", "perplexity:held", tmp_path / "held.jsonl")
    assert [s.name for s in gen.scorers] == ["exact"]
    assert gen2.name == "generate:held#2"  # names stay unique in the report
    assert harness.task == ("a", "b")


def test_a_task_file_with_several_tasks_and_paths_relative_to_it(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "q.jsonl").write_text('{"prompt": "hi", "reference": "hello"}\n')
    (folder / "suite.yaml").write_text(
        "tasks:\n"
        "  - {type: generate, data: q.jsonl, scorers: [exact, final_number], max_new_tokens: 9, limit: 3}\n"
        "  - {type: perplexity, name: loss, data: q.jsonl, train_on: last_assistant, max_length: 64}\n"
    )
    (folder / "one.json").write_text(json.dumps({"type": "choice", "data": "q.jsonl"}))
    gen, ppl, choice = parse_tasks([str(folder / "suite.yaml"), str(folder / "one.json")])
    assert (gen.name, gen.data, gen.limit, gen.max_new_tokens) == ("suite.1", folder / "q.jsonl", 3, 9)
    assert [s.name for s in gen.scorers] == ["exact", "final_number"]
    assert (ppl.name, ppl.train_on, ppl.max_length) == ("loss", "last_assistant", 64)
    assert (choice.type, choice.name) == ("choice", "one")


@pytest.mark.parametrize(
    "content, message",
    [
        ("type: generat\ndata: q.jsonl\n", r"t.yaml: type 'generat' is unknown; expected one of perplexity, generate"),
        ("type: generate\ndata: nowhere.jsonl\n", r"t.yaml: data file .*nowhere.jsonl does not exist"),
        ("type: generate\ndata: q.jsonl\nscorer: [exact]\n", r"t.yaml: key 'scorer' is not read by a generate task"),
        ("type: generate\ndata: q.jsonl\nscorers: [exakt]\n", r"t.yaml: scorers\[0\]: unknown scorer 'exakt'"),
        ("type: generate\ndata: q.jsonl\nscorers: [nomod_xyz:f]\n", r"cannot import module 'nomod_xyz'"),
        ("type: perplexity\ndata: q.jsonl\ntrain_on: all\n", r"t.yaml: train_on: 'all' is unknown"),
        ("type: generate\ndata: q.jsonl\nlimit: 0\n", r"t.yaml: limit: 0 is not a positive whole number"),
        ("type: judge\ndata: q.jsonl\n", r"t.yaml: judge_model: expected a string"),
        ("type: lm-eval\n", r"t.yaml: task: expected an lm-eval task name"),
        ("- 3\n", r"t.yaml: a task is a mapping"),
        ("type: [\n", r"t.yaml: not valid YAML"),
    ],
)
def test_bad_task_files_are_refused_naming_file_and_key(tmp_path, content, message):
    (tmp_path / "q.jsonl").write_text('{"prompt": "hi", "reference": "hello"}\n')
    (tmp_path / "t.yaml").write_text(content)
    with pytest.raises(LmforgeError, match=message):
        parse_tasks([str(tmp_path / "t.yaml")])


@pytest.mark.parametrize(
    "item, message",
    [
        ("nothing", r"--tasks nothing: expected a task file"),
        ("blue:x.jsonl", r"--tasks blue:x.jsonl: unknown task type 'blue'"),
        ("generate:absent.jsonl", r"--tasks generate:absent.jsonl: data file .*absent.jsonl does not exist"),
        ("missing.yaml", r"--tasks missing.yaml: the task file does not exist"),
        ("judge:x.jsonl", r"a judge task needs a task file"),
    ],
)
def test_bad_inline_tasks(tmp_path, monkeypatch, item, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LmforgeError, match=message):
        parse_tasks([item])


def test_rows_are_read_and_checked_with_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"prompt": "hi", "reference": "hello"}\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "reference": "r"}\n'
    )
    first, second = prompt_rows(path)
    assert first.messages == [{"role": "user", "content": "hi"}] and second.messages[0]["role"] == "system"
    assert second.where == f"{path}:2"
    path.write_text('{"prompt": "hi", "reference": "hello"}\n{"question": "hi", "reference": "x"}\n')
    with pytest.raises(LmforgeError, match=r"q.jsonl:2: the row has no `prompt` \(a string\) or `messages`"):
        prompt_rows(path)
    path.write_text('{"prompt": "hi"}\n')
    with pytest.raises(LmforgeError, match=r"q.jsonl:1: the row has no `reference`"):
        prompt_rows(path)
    path.write_text('{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n')
    with pytest.raises(LmforgeError, match=r"q.jsonl:1: the last message is the assistant's"):
        prompt_rows(path, need_reference=False)


def test_choice_rows_take_an_index_or_a_letter(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(
        '{"question": "q", "choices": ["a", "b", "c"], "answer": "c"}\n'
        '{"question": "q", "choices": ["a", "b"], "answer": 1}\n'
    )
    assert [r.answer for r in choice_rows(path)] == [2, 1]
    assert len(choice_rows(path, limit=1)) == 1
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "C"}\n')
    with pytest.raises(LmforgeError, match=r"mc.jsonl:1: `answer` 'C' names no choice; expected an index 0..1"):
        choice_rows(path)
    path.write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    with pytest.raises(LmforgeError, match=r"mc.jsonl:1: `choices` must be a list of two or more"):
        choice_rows(path)
