"""Where the data or the template and the tokenizer's control (special) tokens disagree: warnings, not errors,
since the mask is still exact; what the model learns is not what the user meant.

- Special-token strings typed in a text (a user message holding the literal `<|im_end|>`): the tokenizer reads
  them as the control token itself, so a training text can hold a fake end of turn or a fake new message.
  Found with one compiled pattern of the tokenizer's special tokens, built once per tokenizer as a trie (shared
  prefixes written once): an alternation of every token, longest first, tries each at every `<` and is ~40x
  slower on vocabularies with hundreds of them (DeepSeek-V3: 804).
- A template whose end-of-turn marker holds no special token of the tokenizer (the built-in chatml's
  `<|im_end|>` on a vocabulary without it): the marker trains as a few ordinary tokens, and generation, which
  stops at a special token (EOS), may never stop.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING

import jinja2

from lmforge.data.chat.render import Renderer
from lmforge.data.chat.templates import template_label

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

_PROBE_REPLY = "LMFORGE_PROBE_REPLY"
_SPECIAL_PATTERNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def special_strings(tokenizer: Tokenizer, text: str) -> list[str]:
    """The special-token strings written in `text`, in order (each becomes that control token when tokenised)."""
    return special_pattern(tokenizer).findall(text) if text else []


def special_pattern(tokenizer: Tokenizer) -> re.Pattern:
    """The tokenizer's special tokens (those `turn_ends.stop_pattern` finds) as one regex; the longest wins."""
    pattern = _SPECIAL_PATTERNS.get(tokenizer)
    if pattern is None:
        tokens = set(tokenizer.all_special_tokens)
        tokens |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        tokens.discard("")
        trie: dict = {}
        for token in tokens:
            node = trie
            for char in token:
                node = node.setdefault(char, {})
            node[""] = {}
        pattern = re.compile(_trie_regex(trie) or r"(?!)")
        _SPECIAL_PATTERNS[tokenizer] = pattern
    return pattern


def _trie_regex(node: dict) -> str:
    """A regex matching the strings of a trie (a string ends where a node holds ""), longest first."""
    branches = [re.escape(char) + _trie_regex(child) for char, child in node.items() if char]
    if not branches:
        return ""
    group = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{group})?" if "" in node else group


def turn_end_warning(tokenizer: Tokenizer, template: str) -> str | None:
    """A warning when the text the template writes after an assistant reply holds no special token of the
    tokenizer; None when it does, or when the template cannot render the probe (the mask derivation says why)."""
    renderer = Renderer(tokenizer, template)
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _PROBE_REPLY}]
    try:
        rendered = renderer.render(renderer.prepare(probe))
    except (jinja2.TemplateError, TypeError, ValueError):
        return None
    if _PROBE_REPLY not in rendered:
        return None
    after = rendered[rendered.rindex(_PROBE_REPLY) + len(_PROBE_REPLY) :]
    marker = after.strip()
    if not marker or special_pattern(tokenizer).search(after):
        return None
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    eos = f" ({tokenizer.eos_token!r})" if tokenizer.eos_token else ""
    return (
        f"{template_label(template)} ends assistant turns with {marker!r}, which is not a special token of "
        f"{where}: it is trained as {len(ids)} ordinary tokens and generation, which stops at the EOS token{eos}, "
        "may never stop; use a template whose end-of-turn marker is one of this tokenizer's special tokens "
        "(the model's own: model.chat_template: null), or a tokenizer that has the marker as a special token"
    )
