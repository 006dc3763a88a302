"""Score a trained run on the held-out questions: greedy replies through its chat template.

Exact match: the reply equals the expected one character for character ("7 times 6 is 42.").
Final number: the last number in the reply is the expected one, a looser figure that credits
a right answer in the wrong form.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmforge.infer.chat import generate_reply
from lmforge.infer.load import load_run

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

MAX_NEW_TOKENS = 20  # a reply is under ten tokens; a model that does not stop is cut here
_NUMBER = re.compile(r"-?\d+")


@dataclass
class Score:
    questions: int
    exact: float  # fraction of replies equal to the expected reply
    final_number: float  # fraction whose last number is the expected one


def final_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


@contextmanager
def one_thread():
    """Decoding a tiny model one token at a time is faster on one thread than on several, which mostly wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score(model, tokenizer: Tokenizer, template: str, questions: list[tuple[list[dict], str]]) -> Score:
    exact = number = 0
    with one_thread():
        for messages, expected in questions:
            reply = generate_reply(model, tokenizer, template, messages, max_new_tokens=MAX_NEW_TOKENS)
            exact += reply == expected
            number += final_number(reply) is not None and final_number(reply) == final_number(expected)
    n = max(len(questions), 1)
    return Score(questions=len(questions), exact=exact / n, final_number=number / n)


def score_run(run_dir: Path, questions: list[tuple[list[dict], str]]) -> Score:
    model, tokenizer, template = load_run(run_dir)
    return score(model, tokenizer, template, questions)


def sample_chat(loaded: dict[str, tuple], conversation: list[dict]) -> list[tuple[str, str]]:
    """Replay the user turns of `conversation`, each model (name -> load_run tuple) answering from its own history.

    Returns (speaker, text) lines: system, then per turn the user, each model's reply and the expected one.
    """
    histories: dict[str, list[dict]] = {name: [] for name in loaded}
    lines = []
    with one_thread():
        for message in conversation:
            if message["role"] != "assistant":
                lines.append((message["role"], message["content"]))
                for history in histories.values():
                    history.append(message)
                continue
            for name, (model, tokenizer, template) in loaded.items():
                reply = generate_reply(model, tokenizer, template, histories[name], max_new_tokens=MAX_NEW_TOKENS)
                histories[name].append({"role": "assistant", "content": reply})
                mark = "ok" if reply == message["content"] else "wrong"
                lines.append((name, f"{reply}   [{mark}]"))
            lines.append(("expected", message["content"]))
    return lines
