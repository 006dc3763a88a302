"""Screening before encoding: over-long text cut where no sample reaches (the samples stay the same, the tokenizer
never sees the rest), special-token strings counted with where the first is; both reported by the build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config.recipe import Recipe
from lmforge.data.build import screen as screen_module
from lmforge.data.build.screen import char_bound, cut_text, screen
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Text

from recipe_builds import build
from shared_assets import load, only

LONG = "word " * 4000  # 20,000 characters: past the bound of max_length 32 (1,024 characters)


def test_cut_text_keeps_short_text_and_each_part_of_a_reasoning_reply():
    short = "x" * 10
    assert cut_text(short, 10) is short
    assert cut_text("abcdef", 4) == "abcd"
    assert cut_text("<think>" + "r" * 20 + "</think>" + "a" * 20, 10) == "<think>rrr</think>" + "a" * 10
    assert cut_text("<think>ok</think>" + "a" * 20, 10) == "<think>ok</think>" + "a" * 10


@only("qwen3")
def test_screen_cuts_messages_in_place_and_counts_special_strings(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    bound = char_bound(4)
    conv = Conversation([Message("user", "q" * 500), Message("assistant", "ok", reasoning="r" * 500)], "a.jsonl:1")
    typed = Conversation(
        [Message("user", "say <|im_end|> and <|im_end|>"), Message("assistant", "<|im_start|>")], "a:2"
    )
    pair = PreferencePair([Message("user", "q")], Message("assistant", "c" * 500), Message("assistant", "no"), "b:1")
    kto = KTOExample([Message("user", "<|endoftext|>")], Message("assistant", "y"), True, "c:1")
    text = Text("t" * 500 + "<|im_end|>", "d:1")
    got = screen(tok, [conv, typed, pair, kto, text], 4)
    assert got.cut == 2 and got.special_records == 3 and got.special_at == "a:2"
    assert got.special == {"<|im_end|>": 2, "<|im_start|>": 1, "<|endoftext|>": 1}  # records holding each
    assert len(conv.messages[0].content) == bound and len(conv.messages[1].reasoning) == bound
    assert len(pair.chosen.content) == bound and pair.rejected.content == "no"
    assert len(text.text) == 510  # pretraining text is never cut: every token of it is trained


def sft_recipe(tok_dir: Path, path: Path, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "stage": data.pop("stage", "sft"),
            "model": {"path": str(tok_dir)},
            "data": {"train": [{"path": str(path)}], "max_length": 32, "cache": False, **data},
            "output": str(path.parent / "out"),
        }
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def longest_tokenised(monkeypatch, tok) -> list[int]:
    """The length of the longest text given to the tokenizer from now on (in [0])."""
    seen = [0]
    call = type(tok).__call__

    def spy(self, text=None, *args, **kwargs):
        texts = [text] if isinstance(text, str) else text or []
        seen[0] = max([seen[0], *(len(t) for t in texts if isinstance(t, str))])
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tok), "__call__", spy)
    return seen


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str, **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


LONG_CONVERSATIONS = [
    {"messages": [u(LONG), a("ok")]},  # the reply lies beyond max_length: dropped either way
    {"messages": [{"role": "system", "content": "Be brief."}, u(LONG), a("ok"), u("Again?"), a("Yes.")]},
    {"messages": [u("Write a lot."), a(LONG)]},  # cut at the end, the start of the reply trained
    {"messages": [u("Think."), a("Done.", reasoning_content=LONG)]},
    {"messages": [u("Think more."), a("<think>" + LONG + "</think>Done.")]},
    {"messages": [u("Q1"), a("A1", reasoning_content="r1"), u(LONG), a("A2")]},  # split per turn (Qwen3)
    {"messages": [u("Hi"), a("Hello")]},
]


@only("qwen3")
@pytest.mark.parametrize("truncation", ["cut", "drop"])
def test_cutting_long_text_keeps_the_samples_and_bounds_what_is_tokenised(
    shared_tokenizer_dir, tmp_path, monkeypatch, capsys, truncation
):
    tok = load(shared_tokenizer_dir)
    path = write_jsonl(tmp_path / "long.jsonl", LONG_CONVERSATIONS)
    r = sft_recipe(shared_tokenizer_dir, path, truncation=truncation)
    with monkeypatch.context() as m:
        m.setattr(screen_module, "CHARS_PER_TOKEN", 10**9)  # no bound: every character tokenised
        whole = build(r, tok)
    longest = longest_tokenised(monkeypatch, tok)
    bounded = build(r, tok)
    assert list(bounded.train) == list(whole.train)
    assert vars(bounded.report) | {"cut_records": 0} == vars(whole.report)
    assert bounded.report.cut_records == 6 and whole.report.cut_records == 0
    assert longest[0] < 3 * char_bound(32)  # a rendered conversation: the bounded message and the rest
    assert "6 records hold text longer than 1,024 characters (32 per token of max_length 32)" in capsys.readouterr().err


@only("qwen3")
def test_cutting_long_text_keeps_preference_pairs(shared_tokenizer_dir, tmp_path, monkeypatch):
    tok = load(shared_tokenizer_dir)
    rows = [
        {"prompt": [u("Long answer?")], "chosen": [a(LONG)], "rejected": [a("No.")]},
        {"prompt": [u(LONG), a("ok"), u("Short?")], "chosen": [a("Yes.")], "rejected": [a("No.")]},
    ]
    r = sft_recipe(shared_tokenizer_dir, write_jsonl(tmp_path / "pairs.jsonl", rows), stage="dpo", max_length=48)
    with monkeypatch.context() as m:
        m.setattr(screen_module, "CHARS_PER_TOKEN", 10**9)
        whole = build(r, tok)
    bounded = build(r, tok)
    assert list(bounded.train) == list(whole.train) and bounded.report.cut_records == 2


@only("qwen3")
def test_special_strings_in_content_are_counted_and_said_with_where(shared_tokenizer_dir, tmp_path, capsys):
    tok = load(shared_tokenizer_dir)
    rows = [
        {"messages": [u("Hi"), a("Hello")]},
        {"messages": [u("Type <|im_end|> then <|im_start|>system"), a("ok")]},
        {"messages": [u("Hi"), a("Hello <|im_end|>")]},
    ]
    path = write_jsonl(tmp_path / "typed.jsonl", rows)
    report = build(sft_recipe(shared_tokenizer_dir, path, eval={"path": str(path)}), tok).report
    assert report.special_records == 4  # 2 in train, 2 in eval
    assert report.special_strings == {"<|im_end|>": 4, "<|im_start|>": 2} and report.special_at == f"{path}:2"
    err = capsys.readouterr().err
    assert (
        f"lmforge: data: warning: 4 records type special-token strings in their text (<|im_end|> in 4, "
        f"<|im_start|> in 2; the first at {path}:2): the tokenizer reads each as the control token itself"
    ) in err
    assert "template" not in err  # Qwen3's own template ends turns with a special token


@only("llama2")
def test_the_report_warns_of_an_end_of_turn_that_is_no_special_token(shared_tokenizer_dir, tmp_path, capsys):
    tok = load(shared_tokenizer_dir)
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [u("Hi"), a("Hello")]}])
    r = sft_recipe(shared_tokenizer_dir, path, cache=True, cache_dir=str(tmp_path / "cache"))
    r = r.model_copy(update={"model": r.model.model_copy(update={"chat_template": "chatml"})})
    for cache in ("miss", "hit"):
        bundle = build(r, tok)
        assert bundle.report.cache == cache and "'<|im_end|>', which is not a special token" in (
            bundle.report.template_warning or ""
        )
        assert 'lmforge: data: warning: the chat template (built-in "chatml") ends' in capsys.readouterr().err
