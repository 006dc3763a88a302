"""Talk to a model: one reply through its chat template (`generate_reply`), and the `lmforge chat` REPL on a run
that infer/load.load_run loads.

A reply is generated from exactly the prompt training used (data/masks.generation_prompt renders it)
and stops at the eos token or the template's end-of-turn token, whichever comes first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import jinja2
import torch
from transformers import TextStreamer

from lmforge.data.chat.masks import generation_prompt
from lmforge.errors import LmforgeError
from lmforge.infer.load import load_run

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

HELP = "type a message; /reset clears the history, /system TEXT sets a system prompt, /exit or Ctrl-D quits"


@dataclass(frozen=True)
class Sampling:
    """How `lmforge chat` picks tokens: sampled with these settings, or greedy where asked."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0
    seed: int | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise LmforgeError(f"--temperature {self.temperature}: expected a number above 0 (or --greedy)")
        if not 0 < self.top_p <= 1:
            raise LmforgeError(f"--top-p {self.top_p}: expected a number above 0 and at most 1")
        if self.top_k < 0:
            raise LmforgeError(f"--top-k {self.top_k}: expected 0 (off) or a positive count")
        if self.repetition_penalty <= 0:
            raise LmforgeError(f"--repetition-penalty {self.repetition_penalty}: expected a number above 0 (1: off)")

    def generate_options(self) -> dict:
        penalty = {"repetition_penalty": self.repetition_penalty} if self.repetition_penalty != 1.0 else {}
        if self.greedy:
            return {"do_sample": False, **penalty}
        top_k = {"top_k": self.top_k} if self.top_k else {"top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, **top_k, **penalty}


GREEDY = Sampling(greedy=True)


class _Echo(TextStreamer):
    """Writes each piece of a reply to `stdout` as it is generated (the prompt and special tokens left out)."""

    def __init__(self, tokenizer: Tokenizer, stdout: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stdout = stdout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stdout.write(text + ("\n" if stream_end else ""))
        self.stdout.flush()


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
    sampling: Sampling | None = None,
    streamer: TextStreamer | None = None,
) -> str:
    """The assistant's next reply to `messages`, only the new text: with `sampling` as it says, else greedy
    unless temperature > 0; each piece handed to `streamer` as it is generated."""
    return generate_replies(
        model,
        tokenizer,
        template,
        [messages],
        max_new_tokens,
        temperature=temperature,
        sampling=sampling,
        streamer=streamer,
    )[0]


@torch.no_grad()
def generate_replies(
    model,
    tokenizer: Tokenizer,
    template: str,
    conversations: list[list[dict]],
    max_new_tokens: int = 128,
    batch_size: int = 64,
    temperature: float = 0.0,
    sampling: Sampling | None = None,
    streamer: TextStreamer | None = None,
) -> list[str]:
    """Replies to many conversations, `batch_size` at a time (left-padded prompts, one generate call each);
    with `sampling` as it says, else greedy unless temperature > 0; `streamer` gets a single conversation's
    reply as it is generated."""
    stops = stop_token_ids(tokenizer, template)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    if sampling is not None:
        options = sampling.generate_options()
    else:  # the model's own generation settings, with only the temperature given
        options = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    if streamer is not None:
        if len(conversations) != 1:
            raise ValueError("generate_replies: a streamer takes the reply of one conversation")
        options["streamer"] = streamer
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
            **options,
        )
        replies += [tokenizer.decode(row[longest:], skip_special_tokens=True).strip() for row in output]
    return replies


def chat(
    run_dir: Path | str,
    max_new_tokens: int = 256,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    device: str = "auto",
    dtype: str = "auto",
    sampling: Sampling = Sampling(),
    adapter: Path | None = None,
) -> None:
    """A minimal REPL: each line is a user message; the history is kept until /reset. Replies are written as
    they are generated, sampled as `sampling` says (seeded once, so a session with a seed repeats). The model
    runs on `device` in `dtype` (infer/device.py)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    model, tokenizer, template = load_run(run_dir, device=device, dtype=dtype, adapter=adapter)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
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
        print("assistant> ", end="", file=stdout, flush=True)
        echo = _Echo(tokenizer, stdout)
        reply = generate_reply(model, tokenizer, template, messages, max_new_tokens, sampling=sampling, streamer=echo)
        history.append({"role": "assistant", "content": reply})
