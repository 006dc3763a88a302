"""The quickstart's synthetic task: arithmetic facts as plain text and as multi-turn chats.

Every conversation is about one pair of numbers a, b in 2..9, e.g.

    user:      What is 7 times 6?
    assistant: 7 times 6 is 42.
    user:      And 42 divided by 7?
    assistant: 42 divided by 7 is 6.

The pretraining corpus states the facts of every pair as plain sentences, with no chat format at
all; the fine-tuning chats teach the format (and rehearse the facts). The evaluation asks held-out
conversations: none of them appears, word for word, in the fine-tuning data. A tiny model trained
for a few CPU minutes cannot learn arithmetic it has never seen, so held-out means new
conversations over known facts, not unseen facts.
Everything is drawn from one seeded generator: the same seed gives the same files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

SYSTEM_PROMPT = "You are a calculator. Answer in one sentence."
LOW, HIGH = 2, 9
HELD_OUT_CHATS = 48
SYSTEM_PROMPT_RATE = 0.7  # chats with a system prompt; the others have none, so both work in `lmforge chat`
OPENERS = ("What is {q}?", "How much is {q}?", "Compute {q}.", "{q}?")
FOLLOW_UPS = ("And {q}?", "What about {q}?", "Then {q}?")


@dataclass
class Task:
    texts: list[str]  # pretraining documents (plain sentences)
    train_chats: list[list[dict]]  # fine-tuning conversations
    heldout_chats: list[list[dict]]  # evaluation conversations, none of them in train_chats


def statement(a: int, op: str, b: int) -> str:
    """The one way a fact is written, in the corpus and in every reply: '7 times 6 is 42.'"""
    return f"{a} {op} {b} is {_apply(a, op, b)}."


def _apply(a: int, op: str, b: int) -> int:
    return {"times": a * b, "divided by": a // b, "plus": a + b, "minus": a - b}[op]


def pair_facts(a: int, b: int) -> list[tuple[int, str, int]]:
    """All facts about the unordered pair {a, b}: products, quotients, sums and differences, both ways."""
    facts = []
    for x, y in {(a, b), (b, a)}:
        facts += [(x, "times", y), (x * y, "divided by", x), (x, "plus", y), (x + y, "minus", y)]
    return facts


def all_pairs() -> list[tuple[int, int]]:
    return list(combinations_with_replacement(range(LOW, HIGH + 1), 2))


def conversation(a: int, b: int, kind: str, rng: random.Random, system: bool) -> list[dict]:
    """A 2-3 turn chat about (a, b): a product, then a quotient and the product the other way round
    (kind 'times'), or the same with a sum and a difference. The first answer has to be known; the
    later ones can be read off the conversation."""
    if kind == "times":
        chain = [(a, "times", b), (a * b, "divided by", a), (b, "times", a)]
    else:
        chain = [(a, "plus", b), (a + b, "minus", b), (b, "plus", a)]
    turns = chain[: rng.choice((2, 3))]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
    for i, (x, op, y) in enumerate(turns):
        question = f"{x} {op} {y}"
        asked = rng.choice(OPENERS if i == 0 else FOLLOW_UPS).format(q=question)
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": statement(x, op, y)}]
    return messages


def corpus(pairs: list[tuple[int, int]], docs: int, rng: random.Random) -> list[str]:
    """Documents of a few paragraphs, each paragraph the facts of one pair in random order."""
    texts = []
    for _ in range(docs):
        paragraphs = []
        for a, b in rng.sample(pairs, rng.randint(2, 4)):
            facts = pair_facts(a, b)
            rng.shuffle(facts)
            paragraphs.append(" ".join(statement(*f) for f in facts))
        texts.append("\n".join(paragraphs))
    return texts


def make_task(seed: int = 0, train_chats: int = 2000, docs: int = 1500, heldout: int = HELD_OUT_CHATS) -> Task:
    rng = random.Random(seed)
    pairs = all_pairs()

    def draw() -> list[dict]:
        a, b = rng.choice(pairs)
        if rng.random() < 0.5:
            a, b = b, a
        return conversation(a, b, rng.choice(("times", "plus")), rng, rng.random() < SYSTEM_PROMPT_RATE)

    chats = [draw() for _ in range(train_chats)]
    seen = {json.dumps(c) for c in chats}
    held: list[list[dict]] = []
    while len(held) < heldout:
        chat = draw()
        if json.dumps(chat) not in seen:
            seen.add(json.dumps(chat))
            held.append(chat)
    return Task(texts=corpus(pairs, docs, rng), train_chats=chats, heldout_chats=held)


def questions(chats: list[list[dict]]) -> list[tuple[list[dict], str]]:
    """Every assistant turn as (messages before it, expected reply): the gold history is given."""
    return [(chat[:i], m["content"]) for chat in chats for i, m in enumerate(chat) if m["role"] == "assistant"]


def write_task(task: Task, out_dir: Path) -> dict[str, Path]:
    """pt.jsonl ({"text"}), sft.jsonl and heldout.jsonl ({"messages"}) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"pt": out_dir / "pt.jsonl", "sft": out_dir / "sft.jsonl", "heldout": out_dir / "heldout.jsonl"}
    _write_jsonl(files["pt"], [{"text": t} for t in task.texts])
    _write_jsonl(files["sft"], [{"messages": m} for m in task.train_chats])
    _write_jsonl(files["heldout"], [{"messages": m} for m in task.heldout_chats])
    return files


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_chats(path: Path) -> list[list[dict]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]
