"""What the benchmarks share: the data, the tokenizer, the tiny model, the environments and the measuring.

Everything is made here, from seeds, so that nothing comes from a hub and every framework sees the same:
- chat data with a long tail of lengths (a few dozen tokens to max_length), as JSONL in the OpenAI
  `messages` shape, which lmforge, TRL and LLaMA-Factory (as sharegpt with role/content tags) all read;
- a byte-level BPE tokenizer with a ChatML template whose assistant replies sit in {% generation %}
  blocks (TRL's assistant_only_loss needs them); it renders exactly as LLaMA-Factory's `chatml` template;
- a tiny Llama decoder with random weights, saved with the tokenizer files.

Runs in the main .venv (lmforge's): it builds the assets; the peers only read the files.
Nothing here is imported by src/ or tests/.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
MAIN_PY = ROOT / ".venv" / "bin" / "python"
LF_PY = BENCH / ".venv-lf" / "bin" / "python"
TRL_VENV_PY = BENCH / ".venv-trl" / "bin" / "python"
READY = ".bench-ready"  # written by setup.sh when an environment is finished

VOCAB_SIZE = 2048
MODEL_MAX_POSITIONS = 4096
MODEL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
LF_TEMPLATE = "chatml"  # LLaMA-Factory's template that renders the bench template's token ids (see bench/README.md)
# The chat template and special tokens are the quickstart's (lmforge.quickstart.assets): ChatML, replies and
# their <|im_end|> inside {% generation %} (assistant-only loss for TRL and lmforge).
TURN_OVERHEAD = 5  # template tokens around one message: <|im_start|> role \n ... <|im_end|> \n


# lmforge's data pipeline as `lmforge train` runs it, timed in a process of its own: argv[1] is a recipe as JSON;
# prints one JSON line of the build's seconds and its report's counts.
LMFORGE_BUILD = """
import json, sys, time
from lmforge.config.recipe import Recipe
from lmforge.config.settings import data_settings
from lmforge.data.build.pipeline import build_examples
from lmforge.model.load import load_tokenizer, run_template
recipe = Recipe.model_validate(json.loads(sys.argv[1]))
tokenizer = load_tokenizer(recipe.model)
data = data_settings(recipe, run_template(recipe.model, recipe.stage, tokenizer))
begin = time.perf_counter()
bundle = build_examples(data, tokenizer)
seconds = time.perf_counter() - begin
r = bundle.report
print(json.dumps({"seconds": seconds, "samples": r.samples, "tokens": r.tokens,
                  "trained_tokens": r.trained_tokens, "truncated": r.truncated}), flush=True)
"""


# ---------------------------------------------------------------- data


def _words(rng: random.Random, n: int = 4000) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4)))))
    return sorted(out)


class TextMaker:
    """Zipf-distributed pseudo-words with punctuation: enough structure for BPE merges to matter."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = _words(random.Random(1234))
        weights = [1.0 / (k + 1) for k in range(len(self.words))]
        total = sum(weights)
        self.cum = list(_cumulative([w / total for w in weights]))

    def sentence_words(self, n: int) -> str:
        picks = self.rng.choices(self.words, cum_weights=self.cum, k=max(1, n))
        out, since = [], 0
        for w in picks:
            since += 1
            if since > 6 and self.rng.random() < 0.15:
                out.append(w + self.rng.choice((".", ",", "?", "!", ";")))
                since = 0
            else:
                out.append(w)
        text = " ".join(out)
        return text[0].upper() + text[1:]


def _cumulative(xs: list[float]):
    s = 0.0
    for x in xs:
        s += x
        yield s


def target_lengths(n: int, max_length: int, seed: int, min_length: int = 32) -> list[int]:
    """Long-tail token lengths: log-normal around max_length/8, clipped to [min_length, max_length]."""
    rng = random.Random(seed)
    mu, sigma = math.log(max_length / 8), 0.9
    return [int(min(max_length, max(min_length, rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def make_conversations(n: int, max_length: int, seed: int, tokens_per_word: float) -> list[list[dict]]:
    """n conversations whose rendered length aims at a long-tail target (estimated with tokens_per_word)."""
    text = TextMaker(seed)
    rng = random.Random(seed + 1)
    out = []
    for target in target_lengths(n, max_length, seed + 2):
        messages = []
        budget = target
        if rng.random() < 0.3:
            sys_words = rng.randint(4, 16)
            messages.append({"role": "system", "content": text.sentence_words(sys_words)})
            budget -= int(sys_words * tokens_per_word) + TURN_OVERHEAD
        turns = rng.choices((1, 2, 3, 4), weights=(5, 3, 2, 1))[0]
        per_turn = max(budget // turns, 2 * (TURN_OVERHEAD + 4))
        for _ in range(turns):
            words = max(2, int((per_turn - 2 * TURN_OVERHEAD) / tokens_per_word))
            user = max(1, int(words * rng.uniform(0.15, 0.5)))
            messages.append({"role": "user", "content": text.sentence_words(user)})
            messages.append({"role": "assistant", "content": text.sentence_words(max(1, words - user))})
        out.append(messages)
    return out


# ---------------------------------------------------------------- tokenizer and model


def build_tokenizer(out_dir: Path, seed: int = 0) -> Path:
    from lmforge.quickstart.assets import train_chat_tokenizer

    maker = TextMaker(seed + 99)
    corpus = [maker.sentence_words(random.Random(i).randint(20, 200)) for i in range(3000)]
    tok = train_chat_tokenizer(corpus + ["user\nassistant\nsystem\n"] * 50, VOCAB_SIZE, MODEL_MAX_POSITIONS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir), save_jinja_files=False)
    return out_dir


def model_dir() -> Path:
    """The tiny model with its tokenizer, built once (seeded) under bench/work/assets."""
    assets = WORK / "assets"
    stamp = assets / "model" / "bench-assets.json"
    from lmforge.quickstart.assets import CHAT_TEMPLATE, build_base_model

    spec = {
        "vocab": VOCAB_SIZE,
        "shape": MODEL_SHAPE,
        "positions": MODEL_MAX_POSITIONS,
        "template": hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest(),
    }
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return assets / "model"
    tok_dir = build_tokenizer(assets / "tokenizer")
    build_base_model(assets / "model", tok_dir, shape={**MODEL_SHAPE, "max_position_embeddings": MODEL_MAX_POSITIONS})
    stamp.write_text(json.dumps(spec))
    return assets / "model"


def tokens_per_word(tokenizer) -> float:
    maker = TextMaker(7)
    sentences = [maker.sentence_words(100) for _ in range(50)]
    return sum(len(ids) for ids in tokenizer(sentences)["input_ids"]) / 5000


# ---------------------------------------------------------------- datasets with counts


@dataclass
class ChatData:
    path: Path  # JSONL, one {"messages": [...]} a line
    conversations: int
    tokens: int  # rendered tokens of all conversations
    trained_tokens: int  # tokens inside the assistant replies and their <|im_end|> (the loss-bearing ones)
    lengths: list[int] = field(default_factory=list)


def chat_data(n: int, max_length: int, seed: int = 0, exact: bool = True) -> ChatData:
    """The benchmark chat data: written once per (n, max_length, seed) and counted with the bench tokenizer.

    exact: every conversation is tokenised, its trained tokens counted from the assistant mask, and the
    last reply shortened until the whole fits max_length (so no framework truncates anything). Without
    it (the large preprocessing set), lengths are estimated and a rare one may exceed max_length.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir()))
    path = WORK / "data" / f"chat-n{n}-L{max_length}-s{seed}{'' if exact else '-est'}.jsonl"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return ChatData(path=path, **json.loads(meta.read_text()))
    tpw = tokens_per_word(tok)
    convs = make_conversations(n, max_length, seed, tpw)
    lengths, trained = [], 0
    if exact:
        for conv in convs:
            length, t = _fit(tok, conv, max_length)
            lengths.append(length)
            trained += t
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for conv in convs:
            f.write(json.dumps({"messages": conv}, ensure_ascii=False) + "\n")
    counts = dict(conversations=n, tokens=sum(lengths), trained_tokens=trained, lengths=lengths)
    meta.write_text(json.dumps(counts))
    return ChatData(path=path, **counts)


def count_conversation(tok, messages: list[dict]) -> tuple[int, int]:
    """(tokens, trained tokens) of one conversation rendered with the bench template."""
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return len(enc["input_ids"]), int(sum(enc["assistant_masks"]))


def _fit(tok, conv: list[dict], max_length: int) -> tuple[int, int]:
    """Shorten the last reply (or drop the last turn, or shorten the first prompt) until it fits."""
    length, trained = count_conversation(tok, conv)
    while length > max_length:
        turns = sum(m["role"] == "user" for m in conv)
        last = conv[-1]
        words = last["content"].split(" ")
        if len(words) > 1:
            last["content"] = " ".join(words[: min(len(words) - 1, int(len(words) * 0.9))])
        elif turns > 1:
            del conv[-2:]
        else:
            user = conv[-2]
            user["content"] = " ".join(user["content"].split(" ")[:-1]) or "?"
        length, trained = count_conversation(tok, conv)
    return length, trained


# ---------------------------------------------------------------- environments


def write_lf_dataset_info(work: Path, jsonl: Path) -> Path:
    """dataset_info.json naming the JSONL as sharegpt-style `messages` with OpenAI role/content tags."""
    directory = work / "lf-data"
    directory.mkdir(parents=True, exist_ok=True)
    info = {
        "bench_chat": {
            "file_name": str(jsonl),
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return directory


def trl_python() -> Path | None:
    """bench/.venv-trl when setup.sh built it, else the main .venv when it has trl 1.x, else None."""
    if (TRL_VENV_PY.parent.parent / READY).is_file():
        return TRL_VENV_PY
    probe = subprocess.run([str(MAIN_PY), "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    if probe.returncode == 0 and probe.stdout.strip().startswith("1."):
        return MAIN_PY
    return None


def lf_python() -> Path | None:
    return LF_PY if (LF_PY.parent.parent / READY).is_file() else None


def bench_env(threads: int) -> dict[str, str]:
    """The same thread count and quiet, offline settings for every framework's process."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DISABLE_VERSION_CHECK="1",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
        HF_DATASETS_CACHE=str(WORK / "hf-datasets-cache"),
    )
    env.pop("PYTHONPATH", None)
    return env


# ---------------------------------------------------------------- measuring


class PeakRss:
    """Polls the resident memory of a process and all its descendants; keeps the peak of the sum."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.peak = 0
        self._pid, self._every = pid, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self._every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Ran:
    returncode: int
    wall_s: float
    peak_rss: int
    log: Path
    marks: dict[str, float] = field(default_factory=dict)  # first time (s from start) a watched text was seen


def run_watched(
    cmd: list[str],
    log: Path,
    env: dict[str, str],
    watch: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Ran:
    """Run cmd with its output (stdout and stderr together) to `log`, measuring wall time and peak RSS.

    watch: name -> text; marks[name] is when a line holding that text was first printed.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    watch = watch or {}
    marks: dict[str, float] = {}
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True, bufsize=1
        )
        rss = PeakRss(proc.pid)
        deadline = start + timeout if timeout else None
        for line in proc.stdout:
            now = time.perf_counter() - start
            out.write(line)
            for name, text in watch.items():
                if name not in marks and text in line:
                    marks[name] = now
            if deadline and time.perf_counter() > deadline:
                proc.kill()
        code = proc.wait()
        peak = rss.stop()
    return Ran(code, time.perf_counter() - start, peak, log, marks)


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def fmt_mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
