"""llama.cpp's converter and quantiser, each run in a process of its own: `python -m lmforge.infer.gguf.driver`.

lmforge never imports this module into its own process (infer/gguf/write.py starts it); it imports nothing of
lmforge, so the converter's modules and lmforge's never meet in one interpreter.

    convert MODEL_DIR OUTFILE OUTTYPE [PRE]   cwd: a llama.cpp folder (its `conversion` package and gguf-py)
    quantize INPUT OUTPUT TYPE                llama.cpp's quantiser through the llama_cpp bindings

Exit status 0 on success; UNKNOWN_PRE when the converter does not know the tokenizer's pre-tokenizer and no
PRE was given; anything else is the converter's or quantiser's own failure, its message on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

UNKNOWN_PRE = 3


def convert(model_dir: Path, outfile: Path, outtype: str, pre: str | None) -> int:
    """What llama.cpp's convert_hf_to_gguf.py does for a text model, with one answer added.

    The converter names the tokenizer's pre-tokenizer (`tokenizer.ggml.pre`, the regex llama.cpp splits text
    with before BPE) by hashing the token ids the tokenizer gives a fixed probe text, and looks the hash up in
    a table of published models (`get_vocab_base_pre`). Those ids depend on the vocabulary as much as on the
    splitting, so a vocabulary trained anew (lmforge's quickstart, a model pretrained with its own BPE) is
    unknown even when it splits text exactly as GPT-2 does, and the converter refuses it. Its table cannot be
    extended without editing its file (convert_hf_to_gguf_update.py regenerates it), and `get_vocab_base_pre`
    is the method the converter's model classes exist to answer; so this subclass asks the converter first
    and, only where it does not know the hash, answers with PRE: the llama.cpp pre-tokenizer that lmforge
    found to split text exactly as this tokenizer does (infer/gguf/pretokenizer.py), independent of the
    vocabulary. Without PRE the converter's refusal stands.
    """
    sys.path.insert(0, os.getcwd())
    try:
        from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    except ImportError as err:
        print(
            f"this llama.cpp has no `conversion` package ({err}); lmforge drives the converter as it is split "
            "there (as in the llama.cpp that llama-cpp-python 0.3.36 vendors): pass a newer checkout",
            file=sys.stderr,
        )
        return 2
    import gguf  # the converter's own gguf-py: importing `conversion` put it first on sys.path
    import torch

    hparams = ModelBase.load_hparams(model_dir, False)
    base = get_model_class(get_model_architecture(hparams, ModelType.TEXT))

    class Converter(base):
        model_arch = base.model_arch  # the converter asks every model class to name its architecture itself

        def get_vocab_base_pre(self, tokenizer) -> str:
            try:
                return super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                if pre is None:
                    sys.exit(UNKNOWN_PRE)
                print(f"tokenizer.ggml.pre = {pre} (lmforge's answer: the converter does not know this vocabulary)")
                return pre

    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[outtype]
    with torch.inference_mode():
        Converter(model_dir, ftype, outfile).write()
    return 0


def quantize(source: Path, out: Path, kind: str) -> int:
    """llama.cpp's `llama-quantize SOURCE OUT KIND` through the Python bindings (k-quants and the like)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        print(f"llama_model_quantize returned {status}", file=sys.stderr)
    return 0 if status == 0 else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["convert"] and len(argv) in (4, 5):
        return convert(Path(argv[1]), Path(argv[2]), argv[3], argv[4] if len(argv) == 5 else None)
    if argv[:1] == ["quantize"] and len(argv) == 4:
        return quantize(Path(argv[1]), Path(argv[2]), argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
