"""The `lmforge` command: parse, load the recipe, call one function per sub-command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lmforge import __version__
from lmforge.errors import LmforgeError

EXAMPLES = """examples:
  lmforge train examples/quickstart_sft.yaml train.lr=1e-4 output=runs/try2
  lmforge data inspect my_recipe.yaml -n 3
  lmforge chat runs/my-sft
  lmforge quickstart"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Train language models end to end from one YAML recipe.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = verbs.add_parser("train", help="train as a recipe says", description="Train as a recipe says.")
    train.add_argument("recipe", type=Path, help="the YAML recipe")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe keys, e.g. train.lr=1e-4")
    guard = train.add_mutually_exclusive_group()
    guard.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output")
    guard.add_argument("--overwrite", action="store_true", help="replace an existing output directory")

    data = verbs.add_parser("data", help="look at what a recipe trains on", description="Data tools.")
    data_verbs = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    inspect = data_verbs.add_parser(
        "inspect",
        help="show rendered samples with the trained tokens marked",
        description="Show rendered samples with the trained (loss-bearing) tokens marked; needs only the tokenizer.",
    )
    inspect.add_argument("recipe", type=Path, help="the YAML recipe")
    inspect.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override recipe keys")
    inspect.add_argument("-n", type=int, default=None, help="number of samples (default: 5 shown, all with --json)")
    inspect.add_argument("--json", action="store_true", help="one JSON object per sample: text, input_ids, labels")
    inspect.add_argument("--html", type=Path, help="where to write the HTML view")

    chat = verbs.add_parser("chat", help="chat with a trained run", description="Chat with a trained run directory.")
    chat.add_argument("run_dir", type=Path, help="a run's output directory (full model or adapter)")
    chat.add_argument("--max-new-tokens", type=int, default=256)

    quick = verbs.add_parser(
        "quickstart",
        help="the embedded default: synthetic task, tokenizer, tiny model, pretrain, SFT, eval",
        description="Build a synthetic task, tokenizer and tiny model, pretrain, fine-tune and evaluate on CPU.",
    )
    quick.add_argument("--workdir", type=Path, default=Path("runs/quickstart"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _dispatch(args)
    except LmforgeError as err:
        print(f"lmforge: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from lmforge.config.load import load_recipe
        from lmforge.train.run import run_training

        run_training(load_recipe(args.recipe, args.overrides), resume=args.resume, overwrite=args.overwrite)
    elif args.command == "data":
        from lmforge.config.load import load_recipe
        from lmforge.data.inspect import run_inspect

        run_inspect(load_recipe(args.recipe, args.overrides), n=args.n, as_json=args.json, html_path=args.html)
    elif args.command == "chat":
        from lmforge.infer.chat import chat

        chat(args.run_dir, max_new_tokens=args.max_new_tokens)
    elif args.command == "quickstart":
        from lmforge.quickstart.run import run_quickstart

        run_quickstart(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
