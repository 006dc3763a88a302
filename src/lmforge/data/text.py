"""Pretraining examples from plain documents: fixed blocks, or whole documents packed into bins.

Each document is tokenised without the tokenizer's own special tokens, then given a BOS token in
front (only when the tokenizer has one and adds it by itself) and an EOS token behind, so the model
sees where one document ends and the next begins.

- Blocks (default): all documents joined into one stream and cut into rows of exactly max_length;
  the tokens after the last full block are dropped (and counted). labels = input_ids.
- Packing (`data.packing: true`): documents stay whole (one longer than max_length is cut into
  max_length pieces) and go best-fit-decreasing into bins of at most max_length tokens (`packing.py`:
  each piece has position ids restarting at 0 and its first token labelled IGNORE_INDEX).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.packing import pack_examples
from lmforge.errors import LmforgeError

TOKENIZE_BATCH = 1000


@dataclass
class TextExamples:
    examples: list[dict]
    tokens: int  # tokens of all documents, BOS/EOS included
    dropped_tokens: int  # blocks: the tail after the last full block
    efficiency: float  # real tokens / row capacity (1.0 for blocks)


def tokenize_documents(tokenizer, texts: list[str], batch_size: int = TOKENIZE_BATCH) -> list[list[int]]:
    """Token ids of each document with BOS (if the tokenizer adds one) in front and EOS behind."""
    if tokenizer.eos_token_id is None:
        raise LmforgeError("the tokenizer has no EOS token, so pretraining documents cannot be separated; "
                           "add an eos_token to its tokenizer_config.json")
    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    eos = [tokenizer.eos_token_id]
    docs = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], add_special_tokens=False)["input_ids"]
        docs.extend(bos + list(ids) + eos for ids in batch)
    return docs


def adds_bos(tokenizer) -> bool:
    """True when the tokenizer has a BOS token and puts it in front of text by itself (Llama, Gemma)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def make_blocks(docs: list[list[int]], max_length: int) -> TextExamples:
    """The documents joined into one stream and cut into rows of exactly max_length tokens."""
    stream = [token for doc in docs for token in doc]
    full = len(stream) // max_length * max_length
    examples = []
    for start in range(0, full, max_length):
        block = stream[start:start + max_length]
        examples.append({"input_ids": block, "labels": list(block)})
    return TextExamples(examples, tokens=len(stream), dropped_tokens=len(stream) - full, efficiency=1.0)


def pack_documents(docs: list[list[int]], max_length: int) -> TextExamples:
    """Whole documents (split only when longer than max_length) packed best-fit-decreasing into bins."""
    pieces = [doc[start:start + max_length] for doc in docs for start in range(0, len(doc), max_length)]
    rows, efficiency = pack_examples([{"input_ids": p, "labels": p} for p in pieces], max_length)
    tokens = sum(len(p) for p in pieces)
    return TextExamples(rows, tokens=tokens, dropped_tokens=0, efficiency=efficiency)


def build_text_examples(tokenizer, texts: list[str], max_length: int, packing: bool) -> TextExamples:
    """Blocks or packed bins from the documents, as `data.packing` says."""
    docs = tokenize_documents(tokenizer, texts)
    return pack_documents(docs, max_length) if packing else make_blocks(docs, max_length)
