"""Pretraining text: documents to token ids, and the documents laid out as training rows.

Each document is tokenised without the tokenizer's own special tokens, then given a BOS token in front (only
when the tokenizer has one and adds it by itself) and an EOS token behind, so the model sees where one document
ends and the next begins. A document longer than SLICE_CHARS is tokenised in slices cut where the tokenizer
starts a new token anyway (between two words, after a line end; each kind of cut used only where this tokenizer
gives the same ids as for the whole text), so the same ids come in bounded memory: a fast tokenizer holds ~100
bytes a character while it works, ~6 GB for a 50 MB document. The documents are what the data cache keeps;
after it, `lay_out` makes the rows:

- blocks (default): all documents joined into one stream (the flat array as it is) and cut into rows of exactly
  max_length; the tokens after the last full block are dropped (and counted). labels = input_ids.
- packing (`data.packing: true`): documents stay whole (one longer than max_length is cut into max_length
  pieces) and go into bins with the packer SFT uses (`packing.pack`: position ids restarting at 0 and the first
  label IGNORE_INDEX for each piece).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmforge.data.build.packing import pack
from lmforge.data.examples import Examples
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

TOKENIZE_BATCH = 1000
SLICE_CHARS = 1 << 20  # a longer document is tokenised in slices of about this many characters
# Where a slice may end: between two words, or after a line end before a word (each checked per tokenizer).
CUTS = (r"(?<=\S) (?=\S)", r"(?<=\n)(?=\S)")
CUT_PROBE = (
    "Hello world, it's 2024: 3.14 apples (ripe)! Don't stop.\nNext line。\n東京です。\n日本語 naïve 🚀 "
    "<b>bold</b> x=1; def f():\n    return [a, b]\n\n#  end -- 'q' \"done\"."
)
_SLICE_CUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its cut pattern or None


@dataclass
class Layout:
    """Rows laid out from documents, with what the layout costs."""

    rows: Examples
    dropped_tokens: int = 0  # blocks: the tail after the last full block
    efficiency: float | None = None  # packing: real tokens / row capacity


def tokenize_documents(tokenizer: Tokenizer, texts: list[str], batch_size: int = TOKENIZE_BATCH) -> list[list[int]]:
    """Token ids of each document with BOS (if the tokenizer adds one) in front and EOS behind."""
    if tokenizer.eos_token_id is None:
        raise LmforgeError(
            "the tokenizer has no EOS token, so pretraining documents cannot be separated; "
            "add an eos_token to its tokenizer_config.json"
        )
    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    eos = [tokenizer.eos_token_id]
    docs = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        short = tokenizer([t if len(t) <= SLICE_CHARS else "" for t in batch], add_special_tokens=False)
        for text, ids in zip(batch, short["input_ids"]):
            docs.append(bos + (list(ids) if len(text) <= SLICE_CHARS else _tokenize_long(tokenizer, text)) + eos)
    return docs


def _tokenize_long(tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids of a long text, tokenised slice by slice where this tokenizer allows it (module docstring)."""
    cuts = slice_cuts(tokenizer)
    if cuts is None:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids: list[int] = []
    for piece in slices(text, cuts, SLICE_CHARS):
        ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def slices(text: str, cuts: re.Pattern, size: int) -> list[str]:
    """`text` in pieces of at most about `size` characters, each cut at a match of `cuts` (a piece runs on to
    the next cut where none is within `size`)."""
    out, start = [], 0
    while len(text) - start > size:
        cut = cuts.search(text, start + size // 2, start + size + 1) or cuts.search(text, start + size)
        if cut is None:
            break
        out.append(text[start : cut.start()])
        start = cut.start()
    out.append(text[start:])
    return out


def slice_cuts(tokenizer: Tokenizer) -> re.Pattern | None:
    """The cuts (CUTS) at which this tokenizer gives a text's ids as the ids of its two halves, checked once on
    CUT_PROBE at every such point; None when none holds (the text is then tokenised whole)."""
    if tokenizer not in _SLICE_CUTS:
        whole = list(tokenizer(CUT_PROBE, add_special_tokens=False)["input_ids"])
        agree = [cut for cut in CUTS if _cuts_agree(tokenizer, re.compile(cut), whole)]
        _SLICE_CUTS[tokenizer] = re.compile("|".join(agree)) if agree else None
    return _SLICE_CUTS[tokenizer]


def _cuts_agree(tokenizer: Tokenizer, cut: re.Pattern, whole: list[int]) -> bool:
    points = [m.start() for m in cut.finditer(CUT_PROBE)]
    halves = tokenizer([CUT_PROBE[:p] for p in points] + [CUT_PROBE[p:] for p in points], add_special_tokens=False)[
        "input_ids"
    ]
    return all(list(a) + list(b) == whole for a, b in zip(halves[: len(points)], halves[len(points) :]))


def adds_bos(tokenizer: Tokenizer) -> bool:
    """True when the tokenizer has a BOS token and puts it in front of text by itself (Llama, Gemma)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def lay_out(documents: Examples, max_length: int, packing: bool) -> Layout:
    """Blocks or packed bins from the documents, as `data.packing` says (module docstring)."""
    if packing:
        rows, efficiency = pack(_pieces(documents, max_length), max_length)
        return Layout(rows, efficiency=efficiency)
    return _blocks(documents, max_length)


def _blocks(documents: Examples, max_length: int) -> Layout:
    total = documents.tokens()
    full = total // max_length * max_length
    ids = np.ascontiguousarray(documents.input_ids[:full])
    rows = Examples(input_ids=ids, labels=ids.copy(), lengths=np.full(full // max_length, max_length, np.int64))
    return Layout(rows, dropped_tokens=total - full)


def _pieces(documents: Examples, max_length: int) -> Examples:
    """The documents with each one longer than max_length cut into max_length pieces (the same tokens, in the
    same order: only the lengths change)."""
    lengths = documents.lengths
    whole, rest = np.divmod(lengths, max_length)
    counts = whole + (rest > 0)
    pieces = np.full(int(counts.sum()), max_length, dtype=np.int64)
    last = np.cumsum(counts) - 1
    pieces[last[rest > 0]] = rest[rest > 0]
    return Examples(input_ids=documents.input_ids, labels=documents.labels, lengths=pieces)
