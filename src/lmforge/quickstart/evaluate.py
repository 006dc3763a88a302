"""Score trained runs on the held-out questions with `lmforge eval`'s code, and replay sample chats.

The questions are written as a generation task under WORKDIR (`write_heldout_task`: {messages, reference} rows
and the task file), so the figures are the ones `lmforge eval RUN --tasks WORKDIR/eval/heldout.yaml` gives:
greedy replies through each run's chat template, scored by
- exact: the reply equals the expected one character for character ("7 times 6 is 42.");
- final_number: the last number in the reply is the expected one, a looser figure that credits a right answer
  in the wrong form.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from lmforge.evaluate.run import evaluate_tasks
from lmforge.evaluate.tasks import parse_tasks
from lmforge.infer.chat import generate_reply
from lmforge.infer.load import LoadedRun

MAX_NEW_TOKENS = 20  # a reply is under ten tokens; a model that does not stop is cut here
SCORERS = ("exact", "final_number")
BATCH = 64  # every question of the quick run in one generate call


def write_heldout_task(
    questions: list[tuple[list[dict], str]], folder: Path, name: str = "heldout", scorers=SCORERS
) -> Path:
    """The questions (messages before the reply, expected reply) as an `lmforge eval` generation task: NAME.jsonl
    and the task file NAME.yaml in `folder`; returns the task file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps({"messages": messages, "reference": expected}) + "\n" for messages, expected in questions)
    (folder / f"{name}.jsonl").write_text(rows, encoding="utf-8")
    task = {"type": "generate", "data": f"{name}.jsonl", "max_new_tokens": MAX_NEW_TOKENS, "scorers": list(scorers)}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return path


def score_runs(loaded: dict[str, LoadedRun], task: Path) -> dict[str, dict[str, float]]:
    """Each loaded run's scores (exact, final_number) on the generation task file `task`."""
    (spec,) = parse_tasks([str(task)])
    with one_thread():
        return {
            name: evaluate_tasks(run, [spec], BATCH, progress=False)[spec.name]["metrics"]
            for name, run in loaded.items()
        }


@contextmanager
def one_thread():
    """Decoding a tiny model one token at a time is faster on one thread than on several, which mostly wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
