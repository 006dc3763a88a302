"""Preference-data preprocessing: lmforge's pairs from a JSONL file to tokenised, masked examples.

    python bench/preference_preprocess.py            # 100k pairs
    python bench/preference_preprocess.py --quick    # 10k pairs

The pairs come from the benchmark chat data (bench/common.py): each conversation's history is the
prompt, its last reply the chosen one, and the same reply with its words in reverse order the rejected
one, so both sides are as long as each other. lmforge builds them as `lmforge train` does, with the data
cache off and `--workers` processes (dpo recipe, the bench tokenizer and template); the figures are the
tokens of both sides per second of preprocessing (imports and the tokenizer load outside the timing) and
the peak resident memory of the process and its workers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MAX_LENGTH = 2048


def write_pairs(n: int) -> Path:
    """The pairs file for n conversations of the benchmark chat data (written once)."""
    chats = common.chat_data(n, MAX_LENGTH // 2, seed=2, exact=False).path
    path = common.WORK / "data" / f"pairs-n{n}.jsonl"
    if path.is_file():
        return path
    with chats.open(encoding="utf-8") as src, path.open("w", encoding="utf-8") as out:
        for line in src:
            messages = json.loads(line)["messages"]
            reply = messages[-1]["content"]
            rejected = " ".join(reversed(reply.split())) or "no"
            if rejected == reply:
                rejected += " no"
            out.write(
                json.dumps({"prompt": messages[:-1], "chosen": reply, "rejected": rejected}, ensure_ascii=False) + "\n"
            )
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10k pairs instead of 100k")
    p.add_argument("--pairs", type=int)
    p.add_argument("--workers", type=int, default=common.os.cpu_count() or 1)
    a = p.parse_args(argv)
    n = a.pairs or (10_000 if a.quick else 100_000)
    model = common.model_dir()
    common.say(f"bench: making {n:,} pairs ...")
    data = write_pairs(n)
    work = common.WORK / "preference" / f"n{n}"
    recipe = {
        "stage": "dpo",
        "model": {"path": str(model), "dtype": "fp32"},
        "tuning": {"method": "full"},
        "data": {"train": [{"path": str(data)}], "max_length": MAX_LENGTH, "workers": a.workers, "cache": False},
        "output": str(work / "out"),
    }
    common.say(f"bench: lmforge builds {n:,} pairs with {a.workers} workers ...")
    ran = common.run_watched(
        [str(common.MAIN_PY), "-c", common.LMFORGE_BUILD, json.dumps(recipe)],
        work / "encode.log",
        common.bench_env(a.workers),
    )
    got = None
    for line in reversed(ran.log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            got = json.loads(line)
            break
    if ran.returncode != 0 or got is None:
        sys.exit(f"bench: failed (exit {ran.returncode}); see {ran.log}:\n{common.tail(ran.log)}")
    common.print_table(
        ["preference preprocessing", "tokens/s", "pairs/s", "seconds", "tokens", "peak RSS"],
        [
            [
                "lmforge",
                f"{got['tokens'] / got['seconds']:,.0f}",
                f"{got['samples'] / got['seconds']:,.0f}",
                f"{got['seconds']:.2f}",
                f"{got['tokens']:,}",
                common.fmt_mib(ran.peak_rss),
            ]
        ],
    )
    print(
        f"\n{got['samples']:,} pairs ({got['trained_tokens']:,} trained tokens), {a.workers} workers, "
        f"max_length {MAX_LENGTH}"
    )


if __name__ == "__main__":
    main()
