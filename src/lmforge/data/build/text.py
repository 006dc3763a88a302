"""Pretraining text: documents to token ids, and the documents laid out as training rows.

Each document is tokenised without the tokenizer's own special tokens, then given a BOS token in front (only
when the tokenizer has one and adds it by itself) and an EOS token behind, so the model sees where one document
ends and the next begins. The documents are what the data cache keeps; after it, `lay_out` makes the rows:

- blocks (default): all documents joined into one stream (the flat array as it is) and cut into rows of exactly
  max_length; the tokens after the last full block are dropped (and counted). labels = input_ids.
- packing (`data.packing: true`): documents stay whole (one longer than max_length is cut into max_length
  pieces) and go into bins with the packer SFT uses (`packing.pack`: position ids restarting at 0 and the first
  label IGNORE_INDEX for each piece).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmforge.data.build.packing import pack
from lmforge.data.examples import Examples
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

TOKENIZE_BATCH = 1000


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
        batch = tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
        docs.extend(bos + list(ids) + eos for ids in batch)
    return docs


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
