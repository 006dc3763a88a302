from __future__ import annotations

import random
import re

import pytest
from transformers import AutoTokenizer

from lmforge.data.build import text as text_module
from lmforge.data.build.text import Layout, adds_bos, lay_out, slice_cuts, slices, tokenize_documents
from lmforge.data.examples import IGNORE_INDEX, Examples
from lmforge.data.rows import ExampleRows
from lmforge.errors import LmforgeError

from shared_assets import SHARED_TOKENIZERS, load

BOS, EOS = 1, 2


class CharTokenizer:
    """One token per character (id = code point), with an optional BOS it adds by itself."""

    def __init__(self, bos: bool = True, eos: bool = True):
        self.bos_token_id = BOS if bos else None
        self.eos_token_id = EOS if eos else None

    def __call__(self, texts, add_special_tokens: bool = True):
        batch = [texts] if isinstance(texts, str) else texts
        lead = [BOS] if add_special_tokens and self.bos_token_id is not None else []
        ids = [lead + [ord(c) for c in text] for text in batch]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}


def test_documents_get_bos_and_eos():
    assert tokenize_documents(CharTokenizer(), ["ab", "c"], batch_size=1) == [[BOS, 97, 98, EOS], [BOS, 99, EOS]]
    assert tokenize_documents(CharTokenizer(bos=False), ["ab"]) == [[97, 98, EOS]]
    with pytest.raises(LmforgeError, match="no EOS token"):
        tokenize_documents(CharTokenizer(eos=False), ["ab"])


@pytest.mark.parametrize(
    "shared_tokenizer_dir, bos",
    [(SHARED_TOKENIZERS / name, bos) for name, bos in (("llama2", True), ("qwen3", False), ("deepseek_v3", False))],
    indirect=["shared_tokenizer_dir"],
    ids=["llama2", "qwen3", "deepseek_v3"],
)
def test_bos_only_where_the_tokenizer_adds_it(shared_tokenizer_dir, bos):
    tok = AutoTokenizer.from_pretrained(shared_tokenizer_dir)
    assert adds_bos(tok) is bos
    [doc] = tokenize_documents(tok, ["Hello world"])
    plain = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert doc == ([tok.bos_token_id] if bos else []) + plain + [tok.eos_token_id]


def layout(docs: list[list[int]], max_length: int, packing: bool) -> tuple[Layout, list[dict]]:
    """The documents laid out as the pipeline lays them out after the cache, and its rows."""
    out = lay_out(Examples.from_rows(docs), max_length, packing)
    return out, list(ExampleRows(out.rows))


def test_blocks_are_exactly_max_length_and_count_the_dropped_tail():
    docs = tokenize_documents(CharTokenizer(bos=False), ["abcdefg", "hij", "klmnopqrs"])  # 8 + 4 + 10 = 22 tokens
    out, rows = layout(docs, 5, packing=False)
    assert out.rows.tokens() == 20 and out.dropped_tokens == 2 and len(rows) == 4 and out.efficiency is None
    stream = [t for e in rows for t in e["input_ids"]]
    assert stream == [t for d in docs for t in d][:20]
    assert all(len(e["input_ids"]) == 5 and e["labels"] == e["input_ids"] for e in rows)
    assert "position_ids" not in rows[0]
    assert stream[7] == EOS and stream[11] == EOS  # documents are joined by EOS
    assert layout(docs, 50, packing=False)[1] == []


def test_packing_keeps_every_token_in_bins_with_restarting_positions():
    lengths = [9, 7, 3, 12, 5, 1, 4, 2, 8]
    docs = [[100 * (d + 1) + k for k in range(n)] for d, n in enumerate(lengths)]
    out, rows = layout(docs, 10, packing=True)
    pieces = []
    for row in rows:
        assert len(row["input_ids"]) <= 10
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"])
        starts = [k for k, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        assert starts[0] == 0
        for a, b in zip(starts, starts[1:]):
            piece = row["input_ids"][a:b]
            assert row["position_ids"][a:b] == list(range(b - a))
            assert row["labels"][a:b] == [IGNORE_INDEX] + piece[1:]  # no document predicted from another
            pieces.append(piece)
    # the 12-token document is cut into 10 + 2; nothing else is cut, nothing lost
    assert sorted(map(tuple, pieces)) == sorted(
        [tuple(d) for d in docs if len(d) <= 10] + [tuple(docs[3][:10]), tuple(docs[3][10:])]
    )
    assert out.rows.tokens() == sum(lengths) == 51 and out.dropped_tokens == 0
    assert len(rows) == 6  # 51 tokens need at least 6 bins of 10
    assert out.efficiency == pytest.approx(51 / 60)


def test_best_fit_decreasing_fills_the_fullest_bin_that_fits():
    docs = [[7] * n for n in (6, 5, 4, 3, 2)]
    _, rows = layout(docs, 10, packing=True)
    assert [[len(r["input_ids"]) for r in rows]] == [[10, 10]]
    assert sorted(r["position_ids"].count(0) for r in rows) == [2, 3]  # 6+4, 5+3+2


def test_a_document_as_long_as_max_length_is_one_piece():
    docs = [[5] * 10, [6] * 20, [7] * 3]
    _, rows = layout(docs, 10, packing=True)
    assert sorted(r["position_ids"].count(0) for r in rows) == [1, 1, 1, 1]  # 10, 10 + 10, 3: four pieces
    assert sorted(len(r["input_ids"]) for r in rows) == [3, 10, 10, 10]


VARIED = [
    "alpha",
    "Beta",
    "gamma.",
    "(lorem)",
    "ipsum?",
    "42",
    "3.14",
    "naïve",
    "東京",
    "🚀",
    "x=1;",
    "don't",
    "<b>",
    "def f():\n    return 1\n",
    "\n\n",
    "  ",
    "\t",
    "日本語です。\n",
    "中文文本没有空格。\n第二行",
    "-->",
]


def varied_text(n: int, seed: int = 0) -> str:
    """Words, numbers, code, CJK without spaces, runs of spaces and line ends: every kind of cut and non-cut."""
    rng = random.Random(seed)
    return "".join(rng.choice(VARIED) + rng.choice([" ", "", "\n"]) for _ in range(n))


def test_long_documents_are_tokenised_in_slices_with_the_same_ids(shared_tokenizer_dir, monkeypatch):
    tok = load(shared_tokenizer_dir)
    long, short = varied_text(4000), "A short document."
    whole = tokenize_documents(tok, [long, short])
    longest = [0]
    call = type(tok).__call__

    def spy(self, text=None, *args, **kwargs):
        longest[0] = max([longest[0], *(len(t) for t in ([text] if isinstance(text, str) else text))])
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(text_module, "SLICE_CHARS", 300)
    monkeypatch.setattr(type(tok), "__call__", spy)
    assert tokenize_documents(tok, [long, short]) == whole
    assert 0 < longest[0] < 2 * 300  # CJK without spaces runs to the next line end


def test_slices_end_at_cuts_and_run_on_where_there_is_none():
    cuts = re.compile(r"(?<=\S) (?=\S)")
    text = "aaa bbb ccc ddd eee " + "x" * 30 + " fff"
    pieces = slices(text, cuts, 8)
    assert "".join(pieces) == text
    assert pieces == ["aaa bbb", " ccc", " ddd", " eee", " " + "x" * 30, " fff"]  # each past half the size
    assert slices("short", cuts, 8) == ["short"]


class PrefixTokenizer(CharTokenizer):
    """Adds a marker in front of every text it is given, as SentencePiece's dummy prefix does: no cut keeps ids."""

    def __call__(self, texts, add_special_tokens: bool = True):
        batch = [texts] if isinstance(texts, str) else texts
        ids = [[0] + [ord(c) for c in text] for text in batch]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}


def test_a_tokenizer_that_no_cut_suits_tokenises_long_documents_whole(monkeypatch):
    tok = PrefixTokenizer()
    assert slice_cuts(tok) is None
    assert slice_cuts(CharTokenizer()).pattern == "|".join(text_module.CUTS)  # one token a character: any cut
    monkeypatch.setattr(text_module, "SLICE_CHARS", 10)
    assert tokenize_documents(tok, ["word " * 10]) == [[0, *(ord(c) for c in "word " * 10), EOS]]
