"""The one run loader of the use layer: a finished run directory to (model, tokenizer, chat template).

A run directory holds a full model (config.json and weights) or a peft adapter (adapter_config.json, whose
`base_model_name_or_path` must be a local directory), the tokenizer, and the chat template the run trained
with. `load_run` gives the model in eval mode with
- head "causal": a generating model (`lmforge chat`, the quickstart's evaluation);
- head "reward": a reward model, its one-output classification head on top (`lmforge score`);
the tokenizer saved with the run, else the base model's (an adapter saved without one); and the chat template
the run saved, else the tokenizer's own, so prompts are formatted exactly as in training.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from lmforge.data.sources import hub
from lmforge.errors import LmforgeError
from lmforge.infer.device import pick_device, pick_dtype
from lmforge.model.load import TOKENIZER_FILES
from lmforge.train.rundir import ADAPTER_CONFIG, CHECKPOINT, MODEL_CONFIG, TEMPLATE_FILE, written_at

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

Head = Literal["causal", "reward"]


class LoadedRun(NamedTuple):
    model: Any
    tokenizer: Any
    template: str


def load_run(
    run_dir: Path | str,
    head: Head = "causal",
    device: str = "auto",
    dtype: str = "fp32",
    adapter: Path | None = None,
) -> LoadedRun:
    """The model (full or adapter on its base), tokenizer and chat template of a run directory, one of its
    checkpoints, a plain model folder or a hub id; with `adapter`, that adapter on the model. The model on
    `device` in `dtype` (infer/device.py: auto picks the machine's best)."""
    if head not in ("causal", "reward"):
        raise ValueError(f"load_run: head {head!r} is unknown; expected 'causal' or 'reward'")
    where = pick_device(device)
    options = {"dtype": pick_dtype(dtype, where)}
    model, tokenizer_dir, folder = _model(run_dir, head, options)
    if adapter is not None:
        model, folder = _with_adapter(model, Path(adapter)), Path(adapter)
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            tokenizer_dir = folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(tokenizer_dir), **hub.load_options("model", str(tokenizer_dir), TOKENIZER_FILES)
    )
    if head == "reward":
        _check_reward_head(model, folder or run_dir, tokenizer)
    return LoadedRun(model.to(where).eval(), tokenizer, _template(folder or Path(str(run_dir)), tokenizer))


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _model(source: Path | str, head: Head, options: dict) -> tuple[Any, Path | str, Path | None]:
    """(the model, where its tokenizer is, the local folder whose saved template comes first or None). A saved
    model keeps its head as saved (a language model is then no reward model); an adapter's base gets the head
    the adapter was trained on."""
    auto, run_dir = _auto_class(head), Path(source)
    if not run_dir.is_dir():
        if isinstance(source, str) and _HUB_ID.match(source) and not run_dir.exists():
            return _from_hub(source, auto, options), source, None
        raise LmforgeError(
            f"{run_dir} does not exist; pass the `output` directory of a finished run, one of its checkpoints, "
            "a model folder or a hub id (organisation/name)"
        )
    if (run_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        base = _adapter_base(run_dir)
        model = PeftModel.from_pretrained(auto.from_pretrained(base, **options, **_head_options(head)), str(run_dir))
        has_tokenizer = any((run_dir / name).is_file() for name in TOKENIZER_FILES)
        return model, run_dir if has_tokenizer else base, run_dir
    if (run_dir / MODEL_CONFIG).is_file():
        return auto.from_pretrained(str(run_dir), **options), run_dir, run_dir
    raise LmforgeError(
        f"{run_dir} holds neither a model ({MODEL_CONFIG}) nor an adapter ({ADAPTER_CONFIG}); "
        "pass the output directory of a finished run or one of its checkpoint-N folders"
    )


def _from_hub(name: str, auto, options: dict):
    options = {**options, **hub.load_options("model", name, (MODEL_CONFIG,))}
    try:
        return auto.from_pretrained(name, **options)
    except OSError as err:
        raise LmforgeError(
            f"{name} is neither a local folder nor a model lmforge could fetch from the hub ({err}); "
            "check the name, the network, or download it and pass its folder"
        ) from None


def _with_adapter(model, adapter: Path):
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise LmforgeError(f"--adapter {adapter}: no {ADAPTER_CONFIG} there; pass the folder a LoRA run wrote")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter))


def _auto_class(head: Head):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification


def _head_options(head: Head) -> dict[str, Any]:
    """What the base of an adapter needs to be built with: a reward head has one output."""
    return {"num_labels": 1} if head == "reward" else {}


def _adapter_base(run_dir: Path) -> Path:
    """The local directory of an adapter's base model, as its adapter_config.json names it; where that path is
    gone because the runs were moved together, the same path relative to where the run was written
    (run_info.json's `output`)."""
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(str(run_dir)).base_model_name_or_path
    if base and Path(base).exists():
        return Path(base)
    written, tried = written_at(run_dir), ""
    if base and written is not None and Path(base).is_absolute():
        moved = (run_dir / os.path.relpath(base, written)).resolve()
        if moved.exists():
            return moved
        tried = f", nor is {moved} (where it would be had it moved with the run)"
    raise LmforgeError(
        f"{run_dir / ADAPTER_CONFIG}: base_model_name_or_path {base!r} is not a local directory{tried}; the "
        "adapter needs its base model: edit that key to where the base model is"
    )


def _check_reward_head(model, run_dir: Path, tokenizer: Tokenizer) -> None:
    """A reward model has one output; its config must know the pad token to find each row's last token."""
    if getattr(model.config, "num_labels", 1) != 1:
        raise LmforgeError(
            f"{run_dir} is not a reward model (its head has {model.config.num_labels} outputs); pass "
            "the output directory of a stage rm run"
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _template(run_dir: Path, tokenizer: Tokenizer) -> str:
    """The template the run saved (a checkpoint's run beside it), else the tokenizer's own."""
    saved = run_dir / TEMPLATE_FILE
    for candidate in (saved, run_dir.parent / TEMPLATE_FILE if CHECKPOINT.match(run_dir.name) else None):
        if candidate is not None and candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise LmforgeError(
            f"{run_dir} has no {TEMPLATE_FILE} and its tokenizer no chat template, so prompts cannot "
            f"be formatted; copy the template the run was trained with to {saved}"
        )
    return template
