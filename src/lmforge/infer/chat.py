"""Talk to a model: one reply through its chat template (`generate_reply`), and the `lmforge chat` REPL on a run
that infer/load.load_run loads.

A reply is generated from exactly the prompt training used (data/masks.generation_prompt renders it)
and stops at the eos token or the template's end-of-turn token, whichever comes first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import jinja2
import torch

from lmforge.data.chat.masks import generation_prompt
from lmforge.errors import LmforgeError
from lmforge.infer.load import load_run

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

HELP = "type a message; /reset clears the history, /system TEXT sets a system prompt, /exit or Ctrl-D quits"


def stop_token_ids(tokenizer: Tokenizer, template: str) -> list[int]:
    """The eos token and the special token that ends an assistant turn in this template (e.g. <|eot_id|>)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
        text = tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)
    except jinja2.TemplateError:
        return ids
    after = text[text.rfind("pong") + len("pong") :]
    special = set(tokenizer.all_special_ids)
    for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            if token_id not in ids:
                ids.append(token_id)
            break
    if not ids:
        raise LmforgeError(
            "the tokenizer has no eos token and the chat template ends turns with no special token, "
            "so generation could never stop; set eos_token in tokenizer_config.json"
        )
    return ids


def generate_reply(
    model,
    tokenizer: Tokenizer,
    template: str,
    messages: list[dict],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> str:
    """The assistant's next reply to `messages`: greedy unless temperature > 0; only the new text."""
    return generate_replies(model, tokenizer, template, [messages], max_new_tokens, temperature=temperature)[0]


@torch.no_grad()
def generate_replies(
    model,
    tokenizer: Tokenizer,
    template: str,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    batch_size: int = 64,
    temperature: float = 0.0,
) -> list[str]:
    """Replies to many conversations, `batch_size` at a time (left-padded prompts, one generate call each);
    greedy unless temperature > 0."""
    stops = stop_token_ids(tokenizer, template)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    replies: list[str] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [
            tokenizer(generation_prompt(tokenizer, template, c), add_special_tokens=False)["input_ids"]
            for c in conversations[start : start + batch_size]
        ]
        longest = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=model.device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        # use_cache: runs saved before it was restored on saving say use_cache: false (training turns it off)
        output = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=pad,
            use_cache=True,
            **sampling,
        )
        replies += [tokenizer.decode(row[longest:], skip_special_tokens=True).strip() for row in output]
    return replies


def chat(
    run_dir: Path,
    max_new_tokens: int = 256,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> None:
    """A minimal REPL: each line is a user message; the history is kept until /reset. The model runs on
    `device` in `dtype` (infer/device.py)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    model, tokenizer, template = load_run(run_dir, device=device, dtype=dtype)
    where = f"{model.device}, {str(model.dtype).removeprefix('torch.')}"
    print(f"lmforge chat: {run_dir} on {where} ({HELP})", file=stdout, flush=True)
    system: str | None = None
    history: list[dict] = []
    while True:
        print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:  # end of input (Ctrl-D)
            print(file=stdout)
            return
        text = line.strip()
        if text == "/exit":
            return
        if text == "/reset":
            history = []
            print("(history cleared)", file=stdout, flush=True)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            history = []
            print(f"(system prompt {'set' if system else 'removed'}; history cleared)", file=stdout, flush=True)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        reply = generate_reply(model, tokenizer, template, messages, max_new_tokens=max_new_tokens)
        history.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}", file=stdout, flush=True)
