"""LLaMA-Factory's SFT preprocessing on the benchmark data: run by preprocess_throughput.py in bench/.venv-lf.

The same path `llamafactory-cli train` takes before training (workflow.run_sft): load the tokenizer,
fix it with the template, then `get_dataset` (read the JSON, convert the sharegpt format, tokenise and
mask in `preprocessing_num_workers` processes). Prints one JSON line: seconds, samples, tokens,
trained tokens (labels that are not -100).
"""

from __future__ import annotations

import json
import sys
import time

import yaml


def main() -> None:
    config = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
    started = time.perf_counter()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    imported = time.perf_counter()
    model_args, data_args, training_args, _, _ = get_train_args(config)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    begin = time.perf_counter()
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    seconds = time.perf_counter() - begin
    train = module["train_dataset"]
    tokens = trained = 0
    for batch in train.iter(batch_size=4096):
        tokens += sum(len(row) for row in batch["input_ids"])
        trained += sum(sum(t != -100 for t in row) for row in batch["labels"])
    print(
        json.dumps(
            {
                "seconds": seconds,
                "samples": len(train),
                "tokens": tokens,
                "trained_tokens": trained,
                "import_s": imported - started,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
