"""The reasoning of a trained assistant turn, written where its template leaves it to the model.

Reasoning models' templates render only what the model reads back in later turns: DeepSeek-R1's drops
everything up to `</think>` from every assistant message and ends its generation prompt with `<think>\\n`;
gpt-oss's (harmony) renders the final channel and never the analysis. At inference the model generates the
reasoning after the generation prompt, so a trained turn is the generation prompt followed by what the model
writes: `masks.py` asks `completion` for it where the template's own rendering of the turn does not hold the
reasoning (or does not start with the generation prompt). Two conventions are known:

- an open think block at the end of the generation prompt (`<think>` and whitespace): the model continues it
  with the reasoning, `\\n</think>\\n\\n` and the reply (an empty block, `<think>\\n\\n</think>\\n\\n`, when the
  record has no reasoning: the model learns to answer after it, as Qwen3's template writes such turns);
- harmony channels (`<|channel|>`, `<|message|>`, `<|end|>`, `<|start|>`): the reasoning is an analysis-channel
  message before the turn, `<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant...`.

Reasoning is read from the message's reasoning field, else from a `<think>...</think>` block written at the
start of its content (for harmony templates such a block is moved into the reasoning field before rendering, as
`as_field` does: they would otherwise render it into the final channel as text). Anything else returns None and
the turn is refused as before.
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_OPEN_BLOCK = re.compile(r"<think>\s*$")
_HARMONY = ("<|channel|>", "<|message|>", "<|end|>", "<|start|>")


def given_reasoning(message: dict) -> str:
    """The turn's reasoning: its reasoning field, else what its content holds before its last </think>, as the
    reasoning templates split it ('' for none)."""
    reasoning = message.get("reasoning_content")
    if not reasoning:
        content = message.get("content") or ""
        if THINK_CLOSE not in content:
            return ""
        reasoning = content.rpartition(THINK_CLOSE)[0].replace(THINK_OPEN, "")
    return reasoning.strip("\n")


def answer(content: str) -> str:
    """The reply without its think block: what follows the last </think> (the part a reasoning template renders)."""
    return content.rpartition(THINK_CLOSE)[2].lstrip("\n") if THINK_CLOSE in content else content


def harmony(special: frozenset[str]) -> bool:
    """Whether the tokenizer's special tokens are harmony's (gpt-oss)."""
    return all(token in special for token in _HARMONY)


def as_field(message: dict) -> dict:
    """An assistant message whose content opens with a think block, with that block as its reasoning field."""
    content = message.get("content") or ""
    if message.get("role") != "assistant" or message.get("reasoning_content"):
        return message
    if not (content.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in content):
        return message
    return {**message, "content": answer(content), "reasoning_content": given_reasoning(message)}


def completion(prompt: str, rendered: str, message: dict, special: frozenset[str]) -> tuple[str, int] | None:
    """(what the model writes after `prompt` for this turn, where in it the reply part starts), or None when no
    convention applies. `rendered` is the turn rendered as the last message (F); `special` the tokenizer's
    special-token strings."""
    reasoning = given_reasoning(message)
    opened = _OPEN_BLOCK.search(prompt)
    if opened is not None:
        before = prompt[: opened.start()]
        if not rendered.startswith(before):
            return None
        reply = rendered[len(before) :].lstrip("\n")
        if THINK_CLOSE in reply:  # the template wrote a think block of its own, unlike its generation prompt's
            return None
        head = f"{reasoning}\n{THINK_CLOSE}\n\n"
        return head + reply, len(head)
    if not (harmony(special) and "<|start|>" in prompt and reasoning and rendered.startswith(prompt)):
        return None
    turn = rendered[len(prompt) :]
    if reasoning in turn or not turn.startswith("<|channel|>"):
        return None
    header = prompt[prompt.rindex("<|start|>") :]
    head = f"<|channel|>analysis<|message|>{reasoning}<|end|>{header}"
    return head + turn, len(head)
