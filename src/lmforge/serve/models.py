"""The models a server offers: each loaded with infer/load.load_run (its tokenizer and the chat template it trained
with), its stop tokens and tool-call format read from that template, and its own engine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.console import say
from lmforge.errors import LmforgeError
from lmforge.infer.chat import stop_token_ids
from lmforge.infer.load import load_run
from lmforge.serve.engine import Engine
from lmforge.serve.options import Limits
from lmforge.serve.tools import ToolFormat, tool_format

DEFAULT_CONTEXT = 4096  # where a model's config names no maximum length


@dataclass
class Served:
    name: str
    tokenizer: Any
    template: str
    stop_ids: frozenset[int]
    tools: ToolFormat | None
    context: int
    engine: Engine
    created: int


def load_models(
    source: str, name: str | None, adapters: dict[str, Path], device: str, dtype: str, limits: Limits
) -> dict[str, Served]:
    """The base model under `name` (default: its folder's name or hub id) and each adapter on it under its own
    name, each on its own engine (started)."""
    base = name or (Path(source).name if Path(source).exists() else source)
    if base in adapters:
        raise LmforgeError(f"--adapter {base}=...: {base!r} is already the base model's name; choose another")
    models = {base: _load(base, source, None, device, dtype, limits)}
    for adapter_name, folder in adapters.items():
        models[adapter_name] = _load(adapter_name, source, folder, device, dtype, limits)
    return models


def _load(name: str, source: str, adapter: Path | None, device: str, dtype: str, limits: Limits) -> Served:
    say(f"lmforge serve: loading {name} ({source}{f' + adapter {adapter}' if adapter else ''})")
    model, tokenizer, template = load_run(source, device=device, dtype=dtype, adapter=adapter)
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or DEFAULT_CONTEXT
    engine = Engine(model, limits.max_batch, limits.max_queue, context)
    engine.start()
    return Served(
        name,
        tokenizer,
        template,
        frozenset(stop_token_ids(tokenizer, template)),
        tool_format(tokenizer, template),
        context,
        engine,
        int(time.time()),
    )
