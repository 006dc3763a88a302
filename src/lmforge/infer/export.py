"""`lmforge export`: a trained model as a plain Hugging Face folder that reproduces lmforge's prompts.

A LoRA/DoRA run is merged into its base; the folder gets safetensors shards, config (use_cache on), the
tokenizer with the run's chat template (also as chat_template.jinja) and a generation_config.json whose eos
is the template's end-of-turn tokens, so `AutoModelForCausalLM.from_pretrained(DIR)` with
`apply_chat_template` formats and stops exactly as `lmforge chat` does. The folder is written beside the
destination and renamed into place when complete: an interrupted export leaves no folder that looks finished,
and an existing non-empty destination is never written into. The folder gets a model card (README.md,
infer/model_card.py); with `gguf`, also a GGUF file (infer/gguf/write.py), and with `push_to_hub`, the
complete folder is uploaded (infer/hub.py). Where the GGUF or the upload fails, the folder stays complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.infer.chat import stop_token_ids
from lmforge.infer.gguf.write import check_gguf_type, write_gguf
from lmforge.infer.hub import push_folder
from lmforge.infer.load import load_run
from lmforge.infer.model_card import trained_from, write_card
from lmforge.train.rundir import TEMPLATE_FILE  # also the name transformers reads a tokenizer's template from


def export(
    source: Path | str,
    out: Path,
    dtype: str = "fp32",
    adapter: Path | None = None,
    gguf: str | None = None,
    llama_cpp: Path | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
) -> Path:
    """Write the model of `source` (with `adapter`, merged) to `out` as a plain model folder with its card; with
    `gguf` (a type: f16, q8_0, q4_k_m, ...) also `out/<name>-<type>.gguf`; with `push_to_hub` (a repository
    id) upload the folder. Return `out`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"--out {out} exists and is not an empty folder; choose a new one (nothing was written)")
    if gguf is not None:
        check_gguf_type(gguf)
    model, tokenizer, template = load_run(source, device="cpu", dtype=dtype, adapter=adapter)
    if hasattr(model, "merge_and_unload"):  # a peft adapter: fold it into the base weights
        say(f"lmforge: export: merging the adapter of {source} into its base")
        model = model.merge_and_unload()
    model.config.use_cache = True
    stops = stop_token_ids(tokenizer, template)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
        )
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(str(partial), safe_serialization=True, max_shard_size="2GB")
        tokenizer.chat_template = template
        tokenizer.save_pretrained(str(partial))
        (partial / TEMPLATE_FILE).write_text(template, encoding="utf-8")
        trained = trained_from(source, adapter)
        write_card(partial, out.name, trained, template, load_as=push_to_hub)
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    say(f"lmforge: export: wrote {out} (load it with transformers' AutoModelForCausalLM.from_pretrained)")
    if gguf is not None:
        written = write_gguf(out, gguf, template, dtype, llama_cpp)
        write_card(out, out.name, trained, template, gguf=written.name, load_as=push_to_hub)
    if push_to_hub is not None:
        push_folder(out, push_to_hub, private=private)
    return out
