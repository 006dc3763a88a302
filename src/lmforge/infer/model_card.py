"""The model card an export writes (`DIR/README.md`): Hugging Face metadata front matter and a body with the
training figures, the chat template and how to load the model.

Everything comes from the run directory the export came from (run_info.json, recipe.yaml, metrics.json; see
train/rundir.py): what the run did not record is left out, never guessed. The base model and datasets are
named in the metadata only where they are hub ids (a local path means nothing on the Hub); no license is
written, since a run records none (add the base model's by hand before publishing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmforge.train.rundir import CHECKPOINT, METRICS_FILE, RECIPE_FILE, RUN_INFO_FILE, TEMPLATE_FILE, is_run_dir

CARD_FILE = "README.md"  # the Hub shows a repository's README.md as its card (rundir.CARD_FILE in a run)
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class TrainedFrom:
    """What a run directory says about how the exported model was trained (all optional)."""

    run: Path | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def trained_from(source: Path | str, adapter: Path | None) -> TrainedFrom:
    """The run behind an export: the adapter's run, else the source's (or, for a checkpoint-N, its run)."""
    candidates = [Path(adapter)] if adapter is not None else []
    candidates.append(Path(str(source)))
    if CHECKPOINT.match(candidates[-1].name):
        candidates.append(candidates[-1].parent)
    run = next((c for c in candidates if c.is_dir() and is_run_dir(c)), None)
    if run is None:
        return TrainedFrom()
    return TrainedFrom(
        run,
        _read(run / RECIPE_FILE, yaml.safe_load),
        _read(run / RUN_INFO_FILE, json.loads),
        _read(run / METRICS_FILE, json.loads),
    )


def _read(path: Path, parse) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = parse(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def card_metadata(trained: TrainedFrom, gguf: str | None = None) -> dict[str, Any]:
    """The front matter's keys (Hugging Face's model card metadata), unknown ones left out."""
    recipe = trained.recipe
    model, tuning = recipe.get("model") or {}, recipe.get("tuning") or {}
    tags = ["lmforge", *(v for v in (recipe.get("stage"), tuning.get("method")) if v)]
    meta: dict[str, Any] = {}
    base = model.get("path")
    if base and model.get("init", "pretrained") == "pretrained" and _HUB_ID.match(base) and not Path(base).exists():
        meta["base_model"] = base
    sources = [*((recipe.get("data") or {}).get("train") or [])]
    datasets = sorted({s["hub"] for s in sources if isinstance(s, dict) and s.get("hub")})
    if datasets:
        meta["datasets"] = datasets
    meta["tags"] = tags + (["gguf"] if gguf else [])
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    return meta


def write_card(
    folder: Path, name: str, trained: TrainedFrom, template: str, gguf: str | None = None, load_as: str | None = None
) -> Path:
    """Write `folder/README.md` for the model `name` (the export folder's final name); `gguf` is the name of the
    GGUF file beside it, if one was written; `load_as` the name the card tells users to load (the hub
    repository), else `name`."""
    from huggingface_hub import ModelCardData

    front = ModelCardData(**card_metadata(trained, gguf)).to_yaml()
    parts = [f"---\n{front}\n---\n", f"# {name}\n", _summary(trained), _figures(trained)]
    parts += [_template(template), _usage(load_as or name, gguf)]
    path = folder / CARD_FILE
    path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return path


def _summary(trained: TrainedFrom) -> str:
    recipe, info = trained.recipe, trained.info
    if not recipe and not info:
        return "Exported with `lmforge export`; no lmforge run directory was found, so no training details.\n"
    model, tuning, data = (recipe.get(k) or {} for k in ("model", "tuning", "data"))
    how = [f"Trained with lmforge {info.get('lmforge', '')}".rstrip()]
    how += [f"stage `{recipe['stage']}`"] if recipe.get("stage") else []
    how += [f"tuning `{tuning['method']}`"] if tuning.get("method") else []
    if model.get("path"):
        scratch = " (random weights from its config)" if model.get("init") == "from_config" else ""
        how.append(f"from `{model['path']}`{scratch}")
    lines = [", ".join(how) + "; exported with `lmforge export`.\n"]
    labels = [_label(s) for s in data.get("train") or [] if isinstance(s, dict) and _label(s)]
    if labels:
        length = f" (max_length {data['max_length']})" if data.get("max_length") else ""
        lines.append(f"- data: {', '.join(labels)}{length}")
    fingerprint = (info.get("data") or {}).get("fingerprint")
    lines += [f"- data fingerprint: `{fingerprint}`"] if fingerprint else []
    lines += [f"- {key}: {info[key]}" for key in ("started", "transformers", "torch", "peft") if info.get(key)]
    return "\n".join(lines) + "\n"


def _label(source: dict[str, Any]) -> str | None:
    """A dataset as the recipe names it (config.recipe's Source.label, from the saved YAML)."""
    return source.get("path") or source.get("name") or (f"hub:{source['hub']}" if source.get("hub") else None)


def _figures(trained: TrainedFrom) -> str:
    if not trained.metrics:
        return ""
    rows = [f"| {k} | {f'{v:.4g}' if isinstance(v, float) else v} |" for k, v in sorted(trained.metrics.items())]
    table = "\n".join(["| metric | value |", "|---|---|", *rows])
    return f"## Training figures\n\nThe run's final metrics ({METRICS_FILE}):\n\n{table}\n"


def _template(template: str) -> str:
    fence = "````" if "```" in template else "```"
    return (
        f"## Chat template\n\nThe template the model was trained with (also `{TEMPLATE_FILE}`, and the tokenizer's "
        f"own); prompts formatted otherwise are not what the model learned.\n\n{fence}jinja\n{template}\n{fence}\n"
    )


def _usage(name: str, gguf: str | None) -> str:
    text = f"""## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
messages = [{{"role": "user", "content": "Hello!"}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=128)  # stops at the template's end of turn (generation_config.json)
print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
```

or `lmforge chat {name}`.
"""
    if gguf:
        text += f"""
The GGUF file `{gguf}` (for llama.cpp and the tools built on it) carries the same chat template:

```sh
llama-cli -m {gguf} -cnv
```
"""
    return text
