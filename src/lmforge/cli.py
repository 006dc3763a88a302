"""The `lmforge` command: parse, load the recipe, call one function per sub-command."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from lmforge import __version__
from lmforge.config.recipe import DataFormat
from lmforge.console import quiet_progress_bars, quiet_third_party, say
from lmforge.errors import LmforgeError, report

DATA_FORMATS = typing.get_args(DataFormat)
EXAMPLES = """examples:
  lmforge train examples/quickstart_sft.yaml train.lr=1e-4 output=runs/try2
  lmforge data inspect my_recipe.yaml -n 3
  lmforge plan my_recipe.yaml --gpus 8 --gpu h100 --strategy zero3
  lmforge data stats my_recipe.yaml
  lmforge data convert alpaca.json train.jsonl --to messages
  lmforge chat runs/my-sft
  lmforge score runs/my-rm --messages conversations.jsonl
  lmforge eval runs/my-sft --tasks perplexity:heldout.jsonl generate:questions.jsonl --out report.json
  lmforge serve runs/my-sft --adapter support=runs/support-lora
  lmforge plot runs/my-sft runs/try2 --out compare.png
  lmforge quickstart"""
LIGHT_COMMANDS = ("data", "plot")  # commands that load no model (`data inspect` and `stats` load a tokenizer)


def recipe_command(verbs, name: str, **texts: str) -> argparse.ArgumentParser:
    """A sub-command that takes a recipe and `key.sub=value` overrides of its keys."""
    parser = verbs.add_parser(name, **texts)
    parser.add_argument("recipe", type=Path, help="the YAML recipe")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="override recipe keys (e.g. train.lr=1e-4)"
    )
    return parser


def _add_data_tools(data_verbs) -> None:
    stats = recipe_command(
        data_verbs,
        "stats",
        help="sample, token and truncation figures of the training data",
        description="Samples, token-length percentiles, trained-token fraction, truncated/dropped/rejected "
        "counts and the packing efficiency, from the examples exactly as training builds them; for "
        "preference stages, pairs (KTO: examples) with prompt/chosen/rejected lengths.",
    )
    stats.add_argument("--json", action="store_true", help="the figures as one JSON object")

    convert = data_verbs.add_parser(
        "convert",
        help="rewrite any readable data as OpenAI messages JSON Lines",
        description="Read alpaca, sharegpt, messages, preference or KTO data (JSONL, JSON, Parquet, CSV, a "
        "directory or glob) and write it as OpenAI messages JSON Lines.",
    )
    convert.add_argument("input", help="a data file, directory or glob")
    convert.add_argument("output", type=Path, help="the .jsonl file to write")
    convert.add_argument("--to", choices=["messages"], default="messages", help="the output format")
    convert.add_argument("--format", default="auto", choices=list(DATA_FORMATS), help="the input format")
    convert.add_argument(
        "--on-error",
        choices=["strict", "skip"],
        default="strict",
        help="skip bad records (listed in OUTPUT.rejects.jsonl) instead of stopping",
    )

    validate = data_verbs.add_parser(
        "validate",
        help="list every problem in a data file with its line",
        description="Read a data file and list every problem with file:line; exit status 1 when there is any.",
    )
    validate.add_argument("input", help="a data file, directory or glob")
    validate.add_argument("--format", default="auto", choices=list(DATA_FORMATS), help="the input format")

    split = data_verbs.add_parser(
        "split",
        help="split a data file into train.jsonl and eval.jsonl",
        description="Split a data file's rows, unchanged, into OUT/train.jsonl and OUT/eval.jsonl (seeded).",
    )
    split.add_argument("input", help="a data file, directory or glob")
    split.add_argument("--eval-fraction", type=float, required=True, help="share of rows for eval, e.g. 0.05")
    split.add_argument("--seed", type=int, default=42, help="the same seed gives the same split (default 42)")
    split.add_argument("--out", type=Path, required=True, help="the directory to write train.jsonl and eval.jsonl to")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge",
        description="Train language models end to end from one YAML recipe.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show other libraries' deprecation notices, known log noise and weight-loading bars",
    )
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = recipe_command(verbs, "train", help="train as a recipe says", description="Train as a recipe says.")
    guard = train.add_mutually_exclusive_group()
    guard.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output")
    guard.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    guard.add_argument(
        "--resume-weights-only",
        action="store_true",
        help="load the weights of the latest complete checkpoint in the output and restart the optimizer, "
        "learning-rate schedule and data order from step 0 (when its optimizer or scheduler state is missing)",
    )
    train.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train as N processes on this machine (data parallel), launched with torchrun --standalone",
    )

    _add_plan(verbs)

    data = verbs.add_parser("data", help="look at what a recipe trains on", description="Data tools.")
    data_verbs = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    inspect = recipe_command(
        data_verbs,
        "inspect",
        help="show rendered samples with the trained tokens marked",
        description="Show rendered samples with the trained (loss-bearing) tokens marked; needs only the tokenizer. "
        "Preference stages show each pair's prompt, then the chosen and rejected replies (KTO: the "
        "completion and its label).",
    )
    inspect.add_argument(
        "-n",
        type=int,
        default=None,
        help="how many records to show (conversations, pairs, KTO examples), each with all its samples (one per "
        "assistant turn where data.split_turns splits a conversation); pt: how many blocks or bins. Default: 5, "
        "all with --json",
    )
    inspect.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per sample: text, input_ids, labels (pairs: one each for chosen, rejected)",
    )
    inspect.add_argument("--html", type=Path, help="where to write the HTML view")
    _add_data_tools(data_verbs)

    chat = verbs.add_parser("chat", help="chat with a trained run", description="Chat with a trained run directory.")
    chat.add_argument(
        "run_dir",
        help="a run's output directory (full model or adapter), one of its checkpoints, a model folder or a hub id",
    )
    chat.add_argument("--adapter", type=Path, help="a LoRA/DoRA adapter folder to put on the model given")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    chat.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    chat.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens only (0: off)")
    chat.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages repeats (1: off)")
    chat.add_argument("--seed", type=int, help="seed the sampling, so a session can be repeated")
    chat.add_argument("--greedy", action="store_true", help="always take the likeliest token (no sampling)")
    _add_placement(chat)

    export = verbs.add_parser(
        "export",
        help="write a trained model as a plain Hugging Face folder (a LoRA run merged)",
        description="Write a run (an adapter merged into its base) as safetensors, config, tokenizer, the chat "
        "template and a generation config whose eos is the template's end of turn.",
    )
    export.add_argument("run_dir", help="a run's output directory, one of its checkpoints, a model folder or a hub id")
    export.add_argument("--out", type=Path, required=True, help="a new (or empty) folder to write")
    export.add_argument("--adapter", type=Path, help="a LoRA/DoRA adapter folder to merge into the model given")
    export.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="weights' precision")
    export.add_argument(
        "--gguf",
        metavar="TYPE",
        help="also write DIR/<name>-TYPE.gguf for llama.cpp: f32, f16, bf16, q8_0 (llama.cpp's converter), or "
        "q4_k_m, q5_k_m, q6_k, q4_0, ... (its quantiser, through llama-cpp-python)",
    )
    export.add_argument(
        "--llama-cpp",
        type=Path,
        metavar="DIR",
        help="a llama.cpp checkout whose convert_hf_to_gguf.py to use (default: $LMFORGE_LLAMA_CPP, else a copy "
        "fetched once from PyPI's llama-cpp-python source into lmforge's cache)",
    )
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the finished folder to this model repository")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")

    score = verbs.add_parser(
        "score",
        help="score conversations with a trained reward model",
        description="Print the reward a trained rm run gives each conversation, one number a line.",
    )
    score.add_argument("run_dir", type=Path, help="a stage rm run's output directory")
    score.add_argument(
        "--messages",
        type=Path,
        required=True,
        metavar="FILE.jsonl",
        help='JSON Lines, one {"messages": [{"role": ..., "content": ...}, ...]} a line',
    )

    _add_eval(verbs)
    _add_serve(verbs)

    plot = verbs.add_parser(
        "plot",
        help="draw the loss and learning rate of one run, or of several runs together",
        description="Draw training and eval loss over the steps, the learning rate on a second axis, from each "
        "run's log history (log_history.json of a finished run, else its newest checkpoint's trainer state). "
        "One run without --out: its own loss.png and loss.svg again; several runs: one picture, a colour each.",
    )
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run output directories (or checkpoints)")
    plot.add_argument("--out", type=Path, metavar="FILE", help="the picture to write, .png or .svg")

    quick = verbs.add_parser(
        "quickstart",
        help="the embedded default: synthetic task, tokenizer, tiny model, pretrain, SFT, eval",
        description="Build a synthetic task, tokenizer and tiny model, pretrain, fine-tune and evaluate on CPU. "
        "With --preference, continue from the finished quickstart in WORKDIR: a reward model and DPO "
        "on pairs from its SFT model.",
    )
    quick.add_argument("--workdir", type=Path, default=Path("runs/quickstart"))
    quick.add_argument(
        "--quick", action="store_true", help="a smoke run, a few training steps a stage (the figures then mean little)"
    )
    quick.add_argument(
        "--preference",
        action="store_true",
        help="after a finished quickstart in WORKDIR: train a reward model and DPO, report the figures",
    )
    return parser


def _add_plan(verbs) -> None:
    from lmforge.plan.memory import STRATEGIES
    from lmforge.plan.speed import DEFAULT_GPU, DEFAULT_MFU, GPUS

    plan = recipe_command(
        verbs,
        "plan",
        help="check a recipe and estimate memory and speed per device, without training",
        description="Check the recipe, data, tokenizer and model config in seconds (no weights read), then "
        "estimate peak memory per device term by term, tokens/s from FLOPs, and the largest batch that fits.",
    )
    plan.add_argument("--gpus", type=int, default=1, help="devices training together (default 1)")
    plan.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="how devices share the state (default: the recipe's distributed section, ddp where it has none)",
    )
    plan.add_argument("--gpu", choices=list(GPUS), default=DEFAULT_GPU, help=f"the accelerator ({DEFAULT_GPU})")
    plan.add_argument("--gpu-mem", metavar="SIZE", help="memory of each device, e.g. 80GiB (default: the --gpu's)")
    plan.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"assumed share of peak FLOPs ({DEFAULT_MFU})")
    plan.add_argument("--json", action="store_true", help="the plan as one JSON object")
    plan.add_argument(
        "--measure",
        action="store_true",
        help="also train the recipe's first 2 optimizer steps in a scratch folder (the run's output is not "
        "touched) and print the measured peak beside the estimate",
    )


EVAL_TASKS = """tasks (--tasks TASK ...), inline:
  perplexity:DATA.jsonl   mean loss per trained token and perplexity, with the training masks (text or chat rows)
  generate:DATA.jsonl     greedy replies to {"prompt" or "messages", "reference"} rows, exact match
  choice:DATA.jsonl       multiple choice by log-likelihood: {"question", "choices", "answer"} rows
  lm-eval:TASKNAME        a task of lm-evaluation-harness (pip install lmforge[eval])
or a task file (.yaml/.json) with type: perplexity|generate|choice|lm-eval|judge, data: (relative to the
file), limit:, and per type: format, train_on, max_length (perplexity); scorers: [exact, final_number,
{regex: PATTERN}, module:function, file.py:function], max_new_tokens (generate); task, include_path,
num_fewshot, chat (lm-eval); mode: single|pairwise, judge_model, base_url, api_key_env, opponent,
judge_max_tokens (judge).
See the README's Evaluate section."""


def _add_eval(verbs) -> None:
    evaluate = verbs.add_parser(
        "eval",
        help="evaluate a model on tasks: perplexity, generation, multiple choice, lm-eval, LLM judge",
        description="Evaluate a run (or checkpoint, model folder, hub id) on tasks through the chat template it "
        "was trained with; print a table and write a JSON report.",
        epilog=EVAL_TASKS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("model", help="a run's output directory, one of its checkpoints, a model folder or a hub id")
    evaluate.add_argument("--tasks", nargs="+", required=True, metavar="TASK", help="task files or inline tasks")
    evaluate.add_argument(
        "--adapter", type=Path, metavar="DIR", help="a LoRA/DoRA adapter folder to put on the model given"
    )
    evaluate.add_argument(
        "--out", type=Path, metavar="FILE", help="where to write the JSON report (default: none, the table only)"
    )
    evaluate.add_argument("--limit", type=int, metavar="N", help="at most N rows (questions, documents) per task")
    evaluate.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="rows per forward pass or generate call (8)"
    )
    evaluate.add_argument("--samples", action="store_true", help="keep each row's reply and scores in the report")
    _add_placement(evaluate)


def _add_serve(verbs) -> None:
    serve = verbs.add_parser(
        "serve",
        help="an OpenAI-compatible server for a run (chat and text completions, batched)",
        description="Serve a run over OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models) with the "
        "chat template it trained with; concurrent requests are batched.",
    )
    serve.add_argument("model", help="a run's output directory, one of its checkpoints, a model folder or a hub id")
    serve.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=DIR", help="also serve this adapter as model NAME"
    )
    serve.add_argument("--name", help="the model id of MODEL in the API (default: its folder name)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY on every request but /health")
    serve.add_argument("--max-batch", type=int, default=32, help="sequences generated together (default 32)")
    serve.add_argument("--max-queue", type=int, default=256, help="requests waiting before 503 (default 256)")
    serve.add_argument(
        "--max-new-tokens-limit", type=int, default=1024, help="the most tokens one reply may ask for (default 1024)"
    )
    _add_placement(serve)


def _add_placement(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype of the commands that load a model to use it (infer/device.py reads them)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps or cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on CUDA where supported, fp16 on other GPUs, fp32 on CPU), bf16, fp16, fp32",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party(args.verbose)
    if args.command not in LIGHT_COMMANDS:
        quiet_progress_bars()
    try:
        return _dispatch(args)
    except LmforgeError as err:
        return report(err)
    except KeyboardInterrupt:
        say("lmforge: interrupted")
        return 130


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but recipe overrides may also come after options (`data inspect r.yaml -n 2 a.b=c`):
    argparse ends a `nargs="*"` positional at the first option and would reject the later ones."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from lmforge.config.load import load_recipe
        from lmforge.train.run import run_training

        if args.nproc is not None:
            from lmforge.train.launch import launch

            load_recipe(args.recipe, args.overrides)  # a bad recipe stops here, before N processes start
            return launch(args.nproc, _train_args(args))
        run_training(
            load_recipe(args.recipe, args.overrides),
            resume=args.resume,
            overwrite=args.overwrite,
            weights_only=args.resume_weights_only,
        )
    elif args.command == "data":
        return _dispatch_data(args)
    elif args.command == "plan":
        from lmforge.config.load import load_recipe
        from lmforge.plan.run import run_plan

        run_plan(
            load_recipe(args.recipe, args.overrides),
            str(args.recipe),
            gpus=args.gpus,
            strategy=args.strategy,
            gpu_name=args.gpu,
            gpu_mem=args.gpu_mem,
            mfu=args.mfu,
            as_json=args.json,
            measure=args.measure,
        )
    elif args.command == "chat":
        from lmforge.infer.chat import Sampling, chat

        sampling = Sampling(
            args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.seed, greedy=args.greedy
        )
        chat(
            args.run_dir,
            args.max_new_tokens,
            device=args.device,
            dtype=args.dtype,
            sampling=sampling,
            adapter=args.adapter,
        )
    elif args.command == "export":
        from lmforge.infer.export import export

        if args.private and not args.push_to_hub:
            raise LmforgeError("--private applies to --push-to-hub REPO_ID; add it, or drop --private")
        export(
            args.run_dir,
            args.out,
            dtype=args.dtype,
            adapter=args.adapter,
            gguf=args.gguf,
            llama_cpp=args.llama_cpp,
            push_to_hub=args.push_to_hub,
            private=args.private,
        )
    elif args.command == "score":
        from lmforge.infer.score import score_file

        for value in score_file(args.run_dir, args.messages):
            print(f"{value:.6g}")
    elif args.command == "eval":
        from lmforge.evaluate.run import run_eval

        for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
            if value is not None and value < 1:
                raise LmforgeError(f"{flag} {value}: expected a positive whole number")
        run_eval(
            args.model,
            args.tasks,
            adapter=args.adapter,
            out=args.out,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            keep_samples=args.samples,
        )
    elif args.command == "serve":
        from lmforge.serve.options import Limits, parse_adapters
        from lmforge.serve.server import serve

        limits = Limits(args.max_batch, args.max_queue, args.max_new_tokens_limit)
        serve(
            args.model,
            parse_adapters(args.adapter),
            args.name,
            args.host,
            args.port,
            args.api_key,
            limits,
            args.device,
            args.dtype,
        )
    elif args.command == "plot":
        from lmforge.commands.plot import run_plot

        for path in run_plot(args.runs, args.out):
            print(path)
    elif args.command == "quickstart" and args.preference:
        from lmforge.quickstart.preference import run_preference_quickstart

        run_preference_quickstart(args.workdir, quick=args.quick)
    elif args.command == "quickstart":
        from lmforge.quickstart.run import run_quickstart

        run_quickstart(args.workdir, quick=args.quick)
    return 0


def _train_args(args: argparse.Namespace) -> list[str]:
    """The `lmforge train` arguments again, without --nproc: what each launched process runs."""
    flags = ["--resume"] * args.resume + ["--overwrite"] * args.overwrite
    flags += ["--resume-weights-only"] * args.resume_weights_only
    return [str(args.recipe), *args.overrides, *flags]


def _dispatch_data(args: argparse.Namespace) -> int:
    from lmforge.config.load import load_recipe

    if args.data_command == "inspect":
        from lmforge.commands.inspect import run_inspect

        run_inspect(load_recipe(args.recipe, args.overrides), n=args.n, as_json=args.json, html_path=args.html)
        return 0
    if args.data_command == "stats":
        from lmforge.commands.stats import run_stats

        return run_stats(load_recipe(args.recipe, args.overrides), as_json=args.json)
    from lmforge.commands import data_files

    if args.data_command == "convert":
        return data_files.run_convert(args.input, args.output, to=args.to, fmt=args.format, on_error=args.on_error)
    if args.data_command == "validate":
        return data_files.run_validate(args.input, fmt=args.format)
    return data_files.run_split(args.input, args.eval_fraction, args.seed, args.out)


if __name__ == "__main__":
    sys.exit(main())
