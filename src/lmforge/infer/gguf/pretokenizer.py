"""Which llama.cpp pre-tokenizer splits text exactly as a tokenizer does, found by behaviour, not by vocabulary.

llama.cpp's converter knows a pre-tokenizer only by the hash of the ids a published tokenizer gives its probe
text (see gguf/driver.convert), so a vocabulary trained anew is unknown to it. The splitting itself does not
depend on the vocabulary: this module runs the tokenizer's own normaliser and pre-tokenizer on probe texts and
compares the pieces with those of llama.cpp's regex pre-tokenizers, rebuilt with the `tokenizers` library. An
exact match on every probe names the llama.cpp pre-tokenizer; anything else (a normaliser, another regex) gets
no name, and the converter's refusal stands, since a GGUF would then tokenise text unlike training.
"""

from __future__ import annotations

import json
from pathlib import Path

# llama.cpp's pre-tokenizer names (src/llama-vocab.cpp) with the splitting each stands for, in the
# `tokenizers` pre-tokenizer JSON that published tokenizers carry.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def _split_then_bytes(pattern: str) -> dict:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ],
    }


KNOWN = {
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "llama-bpe": _split_then_bytes(_LLAMA3),
}

PROBES = (
    "Hello world! It's 2024, isn't it? We'll see: 3.14159 and 1234567 apples.",
    "  leading spaces,\ttabs\t\tand\n\nnew lines \r\n  then   runs of    blanks   ",
    "ÜBER naïve café — 東京タワー 我想在apple工作 нещо на Български 🦙🦙 😶‍🌫️ ✅",
    "I'VE 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    'x=1;y+=2**3//4 <tag attr="v">...</tag> ------======= \'\'\'\'```"""......!!!!!!??????',
    "33 333 3333 33333 3.3 3..3 3...3 1,000,000 0x1F",
)


def llama_cpp_pre(tokenizer_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer that splits every probe exactly as `tokenizer_dir`'s tokenizer.json does, or
    None (no tokenizer.json, a normaliser, or no match)."""
    from tokenizers import Tokenizer

    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("normalizer") is not None or spec.get("pre_tokenizer") is None:
        return None  # llama.cpp's BPE normalises nothing
    ours = Tokenizer.from_file(str(path)).pre_tokenizer
    pieces = [_pieces(ours, text) for text in PROBES]
    for name, known in KNOWN.items():
        reference = _from_json(known)
        if [_pieces(reference, text) for text in PROBES] == pieces:
            return name
    return None


def _from_json(spec: dict):
    """A `tokenizers` pre-tokenizer from its JSON, through a throwaway tokenizer (the library's one loader)."""
    from tokenizers import Tokenizer

    shell = {"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": spec}
    return Tokenizer.from_str(json.dumps(shell)).pre_tokenizer


def _pieces(pre_tokenizer, text: str) -> list[str]:
    return [piece for piece, _ in pre_tokenizer.pre_tokenize_str(text)]
