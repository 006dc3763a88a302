from __future__ import annotations

import io
import json
import runpy
import sys
from pathlib import Path

import pytest

from lmforge.commands.inspect import ANSI_TRAINED, CLOSE_MARK, OPEN_MARK, run_inspect
from lmforge.config.recipe import Recipe
from lmforge.data.examples import IGNORE_INDEX
from lmforge.errors import LmforgeError

from shared_assets import SHARED, only, skip_if_mask_check_inapplicable

MASK_CHECK = SHARED / "check" / "mask_check.py"

HARDER = [
    [
        ("system", "You are terse."),
        ("user", "Repeat: hello there"),
        ("assistant", "hello there"),
        ("user", "Again"),
        ("assistant", "hello there"),
        ("user", "Once more"),
        ("assistant", "hello there"),
    ],
    [("user", "Pad it"), ("assistant", "  padded reply with spaces  ")],
    [("user", "Lines?"), ("assistant", "line one\n\nline two\n")],
    [("user", "Unicode"), ("assistant", "Grüße — 東京 🚀 naïve «ok»")],
    [("user", "Code"), ("assistant", "```python\nprint('a < b')\n```")],
    [("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"), ("user", "Q3"), ("assistant", "A3")],
]


def write_convs(path: Path, convs: list[list[tuple[str, str]]]) -> Path:
    lines = [json.dumps({"messages": [{"role": r, "content": c} for r, c in conv]}) for conv in convs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recipe(tok_dir: Path, train: Path, stage: str = "sft", **data) -> Recipe:
    template = "llama2" if tok_dir.name == "llama2" else None  # the base-model tokenizer has no template
    return Recipe.model_validate(
        {
            "stage": stage,
            "model": {"path": str(tok_dir), "chat_template": template if stage == "sft" else None},
            "data": {"train": [{"path": str(train)}], **data},
            "output": str(train.parent / "out"),
        }
    )


def inspect_json(r: Recipe, n: int | None = None) -> list[dict]:
    out = io.StringIO()
    run_inspect(r, n=n, as_json=True, html_path=None, stream=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_passes_the_mask_check_on_each_shared_tokenizer(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    skip_if_mask_check_inapplicable(shared_tokenizer_dir)
    shared_chat = (SHARED / "check" / "chat.jsonl").read_text(encoding="utf-8")
    harder = write_convs(tmp_path / "harder.jsonl", HARDER).read_text(encoding="utf-8")
    convs = tmp_path / "convs.jsonl"
    convs.write_text(shared_chat + harder, encoding="utf-8")
    out = tmp_path / "inspect.jsonl"
    samples = inspect_json(recipe(shared_tokenizer_dir, convs))  # no -n with --json: every sample
    out.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    assert [s["index"] for s in samples] == list(range(len(HARDER) + 3))
    assert [s["source"] for s in samples] == [f"{convs}:{k}" for k in range(1, len(samples) + 1)]
    assert not any(s["truncated"] or s["dropped"] for s in samples)
    verdict = mask_check(shared_tokenizer_dir, convs, out, monkeypatch, capsys)
    assert verdict.startswith(f"masks ok: {len(samples)} samples"), verdict


def mask_check(tok_dir: Path, convs: Path, inspected: Path, monkeypatch, capsys) -> str:
    """The judge's ../shared/check/mask_check.py, run in this process (it exits with a message on a mismatch)."""
    monkeypatch.setattr(sys, "argv", [str(MASK_CHECK), str(tok_dir), str(convs), str(inspected)])
    capsys.readouterr()
    try:
        runpy.run_path(str(MASK_CHECK), run_name="__main__")
    except SystemExit as stop:
        pytest.fail(f"mask_check.py: {stop.code}")
    return capsys.readouterr().out


@only("qwen3")
def test_json_lines_are_the_only_stdout_and_n_limits(shared_tokenizer_dir, tmp_path, capfd):
    convs = write_convs(tmp_path / "chat.jsonl", HARDER)
    run_inspect(recipe(shared_tokenizer_dir, convs), n=2, as_json=True, html_path=None)
    stdout = capfd.readouterr().out
    samples = [json.loads(line) for line in stdout.splitlines()]
    assert len(samples) == 2
    assert set(samples[0]) == {"index", "source", "text", "input_ids", "labels", "truncated", "dropped"}
    assert samples[1]["text"].count("padded reply with spaces") == 1
    with pytest.raises(LmforgeError, match="at least 1"):
        run_inspect(recipe(shared_tokenizer_dir, convs), n=0, as_json=True, html_path=None)


@only("qwen3")
def test_json_marks_truncated_and_dropped_samples(shared_tokenizer_dir, tmp_path):
    convs = write_convs(tmp_path / "chat.jsonl", [[("user", "word " * 40), ("assistant", "ok")], HARDER[0]])
    samples = inspect_json(recipe(shared_tokenizer_dir, convs, max_length=30))
    assert [(s["truncated"], s["dropped"]) for s in samples] == [
        (True, "no trained token within max_length 30"),
        (True, None),
    ]
    assert len(samples[0]["input_ids"]) == 30  # dropped: shown cut, as far as max_length reaches
    assert len(samples[1]["input_ids"]) <= 30  # cut: older turns dropped first, the system message kept
    assert samples[1]["text"].count("<|im_start|>system") == 1


@only("qwen3")
def test_terminal_view_marks_trained_text_and_writes_html(shared_tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    convs = write_convs(tmp_path / "chat.jsonl", HARDER)
    out = io.StringIO()
    run_inspect(recipe(shared_tokenizer_dir, convs), n=3, as_json=False, html_path=None, stream=out)
    text = out.getvalue()
    assert text.count("── sample ") == 3
    assert f"{OPEN_MARK}<think>\n\n</think>\n\n  padded reply with spaces  <|im_end|>{CLOSE_MARK}" in text
    assert text.count(f"{OPEN_MARK}hello there<|im_end|>{CLOSE_MARK}") == 2
    assert text.count(f"{OPEN_MARK}<think>\n\n</think>\n\nhello there<|im_end|>{CLOSE_MARK}") == 1  # the last turn
    assert "\x1b[" not in text  # no colour when the stream is not a terminal
    page = (tmp_path / "lmforge-inspect.html").read_text(encoding="utf-8")
    assert f"HTML view: {tmp_path / 'lmforge-inspect.html'}" in text
    assert page.count('<mark class="trained">hello there&lt;|im_end|&gt;</mark>') == 2
    assert "Legend" in page and "3 samples" in page


@only("qwen3")
def test_colour_on_a_terminal_and_html_path(shared_tokenizer_dir, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    convs = write_convs(tmp_path / "chat.jsonl", HARDER[:1])
    out, page = Terminal(), tmp_path / "views" / "page.html"
    run_inspect(recipe(shared_tokenizer_dir, convs), n=None, as_json=False, html_path=page, stream=out)
    assert f"{ANSI_TRAINED}hello there<|im_end|>" in out.getvalue() and OPEN_MARK not in out.getvalue()
    assert '<mark class="trained">' in page.read_text(encoding="utf-8")


@only("qwen3")
def test_pretraining_samples_are_blocks(shared_tokenizer_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Document {k}. " + "word " * 30}) + "\n" for k in range(50)))
    samples = inspect_json(recipe(shared_tokenizer_dir, corpus, stage="pt", max_length=16), n=3)
    assert [s["source"] for s in samples] == ["block 0", "block 1", "block 2"]
    assert all(s["labels"] == s["input_ids"] and len(s["input_ids"]) == 16 for s in samples)
    packed = inspect_json(recipe(shared_tokenizer_dir, corpus, stage="pt", max_length=64, packing=True), n=2)
    assert all(s["labels"][0] == IGNORE_INDEX and s["position_ids"][0] == 0 for s in packed)


TOKEN_CHECK = SHARED / "check" / "token_check.py"
REASONING_CHATS = [
    {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "reasoning_content": "first thought"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2", "reasoning_content": "second thought"},
        ]
    },
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "reasoning_content": "think 1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
            {"role": "user", "content": "Q3"},
            {"role": "assistant", "content": "A3", "reasoning_content": "think 3"},
        ]
    },
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def token_check(tok_dir: Path, convs: Path, samples: list[dict], monkeypatch, capsys) -> str:
    """The judge's ../shared/check/token_check.py on the samples, run in this process; its last line."""
    inspected = convs.with_suffix(".inspect.jsonl")
    write_jsonl(inspected, samples)
    monkeypatch.setattr(sys, "argv", [str(TOKEN_CHECK), str(tok_dir), str(convs), str(inspected)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(TOKEN_CHECK), run_name="__main__")
    out = capsys.readouterr().out
    assert stop.value.code == 0, out
    return out.strip().splitlines()[-1]


@only("qwen3")
def test_every_sample_of_a_conversation_split_per_turn_is_shown(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    """Qwen3 drops the reasoning of earlier turns: those conversations are one sample per assistant turn, and
    inspect shows each (the checker matches the k-th sample of a source to its k-th assistant turn)."""
    convs = write_jsonl(tmp_path / "reasoning.jsonl", REASONING_CHATS)
    samples = inspect_json(recipe(shared_tokenizer_dir, convs))
    assert [s["source"] for s in samples] == [f"{convs}:{k}" for k in (1, 1, 2, 3, 3, 3)]
    assert [s["index"] for s in samples] == list(range(6))
    assert "second thought" in samples[1]["text"] and "second thought" not in samples[0]["text"]
    assert token_check(shared_tokenizer_dir, convs, samples, monkeypatch, capsys) == (
        "token_check: 6 samples, 6 turns, 0 problems"
    )
    first = inspect_json(recipe(shared_tokenizer_dir, convs), n=1)  # -n counts conversations
    assert [s["source"] for s in first] == [f"{convs}:1"] * 2
    out = io.StringIO()
    run_inspect(recipe(shared_tokenizer_dir, convs), n=1, as_json=False, html_path=tmp_path / "v.html", stream=out)
    assert out.getvalue().count("── sample ") == 2
    assert f"sample 1 · {convs}:1 · assistant turn 2 of 2 (data.split_turns), " in out.getvalue()


@only("qwen3")
def test_bad_records_are_left_out_and_counted_under_skip(shared_tokenizer_dir, tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    tool_call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    tools = {  # the built-in chatml has no tool format: the template refuses it
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"messages": [{"role": "user"},]}', tools, good, good])

    def chatml(**data) -> Recipe:
        r = recipe(shared_tokenizer_dir, path, **data)
        return r.model_copy(update={"model": r.model.model_copy(update={"chat_template": "chatml"})})

    capsys.readouterr()
    assert [s["source"] for s in inspect_json(chatml(on_error="skip"))] == [f"{path}:3", f"{path}:4"]
    err = capsys.readouterr().err
    assert (
        "lmforge: inspect: left out 2 bad records (data.on_error: skip): 1 malformed line, 1 template cannot "
        f"encode it; the first: {path}:1: not valid JSON"
    ) in err
    assert [s["source"] for s in inspect_json(chatml(on_error="skip"), n=1)] == [f"{path}:3"]
    with pytest.raises(LmforgeError, match=f"^{path}:1: not valid JSON"):
        inspect_json(chatml())
    path.write_text(path.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")  # the template's refusal
    with pytest.raises(LmforgeError, match=f"^{path}:1: .*chatml.*; or set data.on_error: skip"):
        inspect_json(chatml())


@only("llama2")
def test_warnings_of_the_data_and_template_go_to_stderr(shared_tokenizer_dir, tmp_path, capfd):
    path = write_jsonl(
        tmp_path / "typed.jsonl",
        [{"messages": [{"role": "user", "content": "Say </s> now"}, {"role": "assistant", "content": "ok"}]}],
    )
    r = recipe(shared_tokenizer_dir, path)
    r = r.model_copy(update={"model": r.model.model_copy(update={"chat_template": "chatml"})})
    run_inspect(r, n=None, as_json=True, html_path=None)
    out, err = capfd.readouterr()
    assert [json.loads(line)["source"] for line in out.splitlines()] == [f"{path}:1"]
    assert f"1 records type special-token strings in their text (</s> in 1; the first at {path}:1)" in err
    assert "warning: the chat template (built-in \"chatml\") ends assistant turns with '<|im_end|>'" in err
