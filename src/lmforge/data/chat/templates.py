"""Which Jinja chat template a run uses: the tokenizer's own, a built-in one by name, or a .jinja file."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

TEMPLATE_DIR = Path(__file__).parent / "templates"
BUILTIN_TEMPLATES: dict[str, Path] = {path.stem: path for path in sorted(TEMPLATE_DIR.glob("*.jinja"))}
# Built-ins with a tool format (tool schemas, assistant tool calls, tool results); the others raise a
# template error when a conversation holds any of them.
TOOL_TEMPLATES = ("qwen", "llama3", "mistral")


def builtin_names() -> str:
    return ", ".join(BUILTIN_TEMPLATES)


def template_label(template: str) -> str:
    """How error messages name a template: the built-in's name where the text is one."""
    name = _builtin_by_text().get(template)
    return f'the chat template (built-in "{name}")' if name else "the chat template"


@functools.lru_cache(maxsize=1)
def _builtin_by_text() -> dict[str, str]:
    return {path.read_text(encoding="utf-8"): name for name, path in BUILTIN_TEMPLATES.items()}


def resolve_chat_template(tokenizer: Tokenizer, spec: str | None) -> str:
    """The Jinja text of the template named by `model.chat_template` (None: the tokenizer's own)."""
    if spec is None:
        return _tokenizer_template(tokenizer)
    if spec in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec].read_text(encoding="utf-8")
    if spec.endswith(".jinja"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise LmforgeError(
                f"model.chat_template: template file {spec} does not exist; "
                f"give an existing .jinja file or one of the built-ins: {builtin_names()}"
            )
        return path.read_text(encoding="utf-8")
    close = difflib.get_close_matches(spec, BUILTIN_TEMPLATES, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise LmforgeError(
        f'model.chat_template: unknown template "{spec}"{hint}; '
        f"use one of the built-ins: {builtin_names()}, a path ending in .jinja, or null for the tokenizer's own"
    )


def _tokenizer_template(tokenizer: Tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    if isinstance(template, dict):  # several named templates: the default one is the chat template
        if "default" not in template:
            raise LmforgeError(
                f"{where} has named chat templates ({', '.join(template)}) but no 'default' one; "
                f"set model.chat_template to one of the built-ins ({builtin_names()}) or a .jinja file"
            )
        template = template["default"]
    if not template:
        raise LmforgeError(
            f"{where} has no chat template (a base model?); set model.chat_template to one of the built-ins "
            f"({builtin_names()}) or to a .jinja file"
        )
    return template
