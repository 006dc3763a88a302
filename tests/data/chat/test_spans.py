"""Token labels from character spans: the bisection on forward offsets gives what the scans give."""

from __future__ import annotations

import random

import pytest

from lmforge.data.chat.spans import (
    IGNORE_INDEX,
    _direct_backend,
    check_generation,
    compare_marks,
    forward_bounds,
    generation_marks,
    label_tokens,
    tokenize,
)
from lmforge.errors import LmforgeError


class FakeTokenizer:
    def decode(self, ids):
        return " ".join(map(str, ids))


def forward_offsets(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """Offsets as tokenizers give them: contiguous, some zero-width (trimmed whitespace), some gaps."""
    out, at = [], 0
    for _ in range(n):
        at += rng.choice((0, 0, 0, 1))  # a gap: characters no token covers
        width = rng.choice((0, 1, 2, 3, 5))
        out.append((at, at + width))
        at += width
    return out


def spans_over(rng: random.Random, length: int, k: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.choices(range(length + 1), k=2 * k))  # empty and touching spans too
    return [(cuts[2 * i], cuts[2 * i + 1]) for i in range(k)]


def outcome(fn, *args):
    """What fn(*args) returns, or the message of the LmforgeError it raises."""
    try:
        return fn(*args)
    except LmforgeError as err:
        return str(err)


def test_bisection_gives_the_scans_result():
    rng = random.Random(0)
    text_of = lambda offsets: "x" * (offsets[-1][1] + 5)  # noqa: E731 (no whitespace: boundary checks bite)
    for _ in range(3000):
        offsets = forward_offsets(rng, rng.randrange(1, 40))
        ids = list(range(100, 100 + len(offsets)))
        text = text_of(offsets)
        spans = [(a, b) for a, b in spans_over(rng, offsets[-1][1] + 2, rng.randrange(1, 4)) if a < b]  # as derived
        if not spans:
            continue
        bounds = forward_bounds(offsets)
        assert bounds is not None
        fast = outcome(label_tokens, text, ids, offsets, spans, "w", bounds)
        assert fast == outcome(label_tokens, text, ids, offsets, spans, "w", None)
        if isinstance(fast, str):
            continue
        labels, ranges = fast
        generation = spans_over(rng, offsets[-1][1] + 2, rng.randrange(1, 4)) if rng.random() < 0.5 else spans
        for last_only in (False, True):
            marks = generation_marks(offsets, generation)
            expected = outcome(compare_marks, FakeTokenizer(), "w", ids, labels, marks, last_only)
            got = outcome(
                check_generation, FakeTokenizer(), "w", ids, offsets, labels, ranges, generation, last_only, bounds
            )
            assert got == expected, (offsets, spans, generation, last_only)


def test_offsets_that_go_back_are_scanned():
    offsets = [(0, 2), (2, 4), (1, 3), (4, 6)]
    assert forward_bounds(offsets) is None
    labels, ranges = label_tokens("ab   f", [1, 2, 3, 4], offsets, [(3, 6)], "w", None)
    assert labels == [IGNORE_INDEX, 2, 3, 4] and ranges == [(1, 4)]


def test_generation_blocks_that_disagree_name_the_token():
    offsets = [(0, 1), (1, 2), (2, 3), (3, 4)]
    labels, ranges = label_tokens("abcd", [5, 6, 7, 8], offsets, [(2, 4)], "data.jsonl:3")
    with pytest.raises(
        LmforgeError,
        match=r"data.jsonl:3: the template's \{% generation %\} blocks mark other tokens"
        r" than the derived mask, first at token 1",
    ):
        check_generation(
            FakeTokenizer(),
            "data.jsonl:3",
            [5, 6, 7, 8],
            offsets,
            labels,
            ranges,
            [(1, 4)],
            False,
            forward_bounds(offsets),
        )


TRICKY_TEXTS = [
    "",
    " ",
    "Hello world",
    "  two  spaces\n\nand lines\t",
    "émoji 🙂 and 中文 text",
    "<s>[INST] hi [/INST]",
    "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n A<|im_end|>\n",
    "<think>\nr\n</think>\n\nok",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>",
    "\u200b\ufeffodd\r\n",
]


def _call_result(tok, texts):
    enc = tok(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return [(list(ids), [tuple(o) for o in offsets]) for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"])]


def _texts_for(tok) -> list[str]:
    specials = [t for t in tok.all_special_tokens if t]
    return TRICKY_TEXTS + [f"{a} middle {b}end" for a, b in zip(specials, specials[1:] + specials[:1])]


def test_the_direct_tokenizer_call_gives_what_the_tokenizer_call_gives(shared_tokenizer_dir, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    for directory in (shared_tokenizer_dir, tiny_tokenizer_dir):
        tok = AutoTokenizer.from_pretrained(directory)
        assert _direct_backend(tok) is not None, directory.name  # these all take the direct path
        texts = _texts_for(tok)
        assert [(list(i), [tuple(o) for o in off]) for i, off in tokenize(tok, texts, "w")] == _call_result(tok, texts)


def test_a_tokenizer_whose_backend_truncates_goes_through_the_call(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.backend_tokenizer.enable_truncation(max_length=3)  # the call turns this off; a direct call would not
    assert _direct_backend(tok) is None
    long = ["a b c d e f g h i j"]
    got = tokenize(tok, long, "w")
    assert len(got[0][0]) > 3 and tok.backend_tokenizer.truncation is None
    assert _direct_backend(tok) is not None and tokenize(tok, long, "w") == got
