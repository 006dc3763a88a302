"""`lmforge train`: recipe in, trained run directory out. Reads top to bottom as the algorithm."""

from __future__ import annotations

import signal
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainingArguments, set_seed

from lmforge.config.recipe import PREFERENCE_STAGES, Recipe
from lmforge.config.settings import data_settings
from lmforge.console import say
from lmforge.data.build.pipeline import build_examples
from lmforge.errors import LmforgeError, RunStopped
from lmforge.model.adapters import apply_tuning, describe_trainable, parameter_counts
from lmforge.model.load import load_model, load_tokenizer, resolve_dtype, run_template
from lmforge.train import ranks, rundir
from lmforge.train.callbacks import NanGuard, OnFirstStep, ProgressPrinter
from lmforge.train.collate import Collator
from lmforge.train.ledger import RunLedger
from lmforge.train.plot import write_loss_plot
from lmforge.train.preempt import StopOnSignal, exit_status
from lmforge.train.preference import PreferenceTrainer, make_preference_trainer
from lmforge.train.profile import StepProfiler
from lmforge.train.resume import ResumePoint, check_resume, check_same_data, record_resume, train_or_finish
from lmforge.train.strategy import start_deepspeed, strategy_arguments
from lmforge.train.trainer import LmforgeTrainer

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer


def run_training(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train as the recipe says and return the output directory holding the final model or adapter.

    Nothing is written to the output until the tokenizer and the data are ready; from then on a failure before
    the first optimizer step undoes the start (rundir.RunStart). A run stopped by SIGTERM or SIGINT keeps its
    checkpoint, writes nothing that claims a finished run and raises RunStopped. `--resume` continues the same
    run, or refuses before anything is written (resume.py).
    """
    recipe = resolve_local_paths(recipe)
    output = Path(recipe.output)
    ranks.start()  # several processes (torchrun): rank 0 writes the run directory, see ranks.py
    plan = rundir.check_output(output, resume=resume, overwrite=overwrite)
    point = check_resume(recipe, output, plan.checkpoint) if plan.checkpoint else None
    ranks.barrier()  # every rank has looked at the output before rank 0 changes it
    say(f"lmforge: {recipe.stage} run, {recipe.tuning.method} tuning of {recipe.model.path} -> {output}")

    tokenizer = load_tokenizer(recipe.model)
    template = run_template(recipe.model, recipe.stage, tokenizer)  # resolved once: the data and the saved run
    data = build_examples(data_settings(recipe, template), tokenizer, wait_for_cache=not ranks.is_main())
    if point:
        check_same_data(point, data.report.fingerprint)
    ledger = point.ledger if point else _new_ledger(recipe, data.report.fingerprint)

    with rundir.RunStart(plan) if ranks.is_main() else nullcontext() as run:
        if run is not None:
            _write_start(run, recipe, data, point)
        ranks.barrier()  # the output exists with its start files before any rank trains into it
        set_seed(recipe.train.seed)  # weights made here (from_config, LoRA, heads) are the same in every run
        trainer = make_trainer(
            recipe, tokenizer, data, on_first_step=run.started if run else None, extra_callbacks=(ledger,)
        )
        trainer.tokens.continue_from(ledger.trained_tokens)
        model = trainer.model
        _check_trainable_attention(model)
        say(f"lmforge: {describe_trainable(model)}; attention: {attention_of(model)}")
        trainer.remove_callback(printer_class())
        session = train_or_finish(trainer, point, plan.checkpoint)
    _stop_if_nan(trainer)
    _stop_if_asked(trainer, output)

    metrics = ledger.whole_run(session, trainer.state.global_step, point.step if point else 0)
    metrics["trained_tokens"] = trainer.tokens.job_total()
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if data.eval is not None:
        metrics.update(trainer.evaluate())
    _save_final(trainer, output, recipe, template, metrics, parameter_counts(model))
    say(f"lmforge: done; final model in {output} ({_summary(metrics)})")
    ranks.finish()
    return output


def _write_start(run: rundir.RunStart, recipe: Recipe, data, point: ResumePoint | None) -> None:
    """The run's first files: the rejects (on every start) and, for a new run, its recipe and run info; a resume
    is recorded in the run info."""
    output = run.plan.output
    if data.report.rejected:
        data.report.rejects_path = str(rundir.write_rejects(output, data.rejects))
        say(
            f"lmforge: data: the {data.report.rejected:,} skipped records are listed with why in "
            f"{data.report.rejects_path}"
        )
    if point is None:
        rundir.write_run_start(output, recipe, _report_dict(data.report))
    else:
        record_resume(point)


def _new_ledger(recipe: Recipe, fingerprint: str) -> RunLedger:
    """The ledger a new run's checkpoints carry (ledger.py)."""
    return RunLedger(recipe=recipe.model_dump(mode="json"), fingerprint=fingerprint, world_size=ranks.world_size())


def make_trainer(
    recipe: Recipe, tokenizer: Tokenizer, data, on_first_step=None, extra_callbacks: tuple = ()
) -> LmforgeTrainer | PreferenceTrainer:
    """The model and trainer of the recipe's stage family: pt/sft here, rm and the rest in preference.py."""
    args = training_arguments(recipe, has_eval=data.eval is not None)
    start_deepspeed(recipe)
    callbacks = [ProgressPrinter(), StopOnSignal(), NanGuard(), *extra_callbacks]
    if on_first_step is not None:
        callbacks.append(OnFirstStep(on_first_step))
    if recipe.train.profile_steps:
        callbacks.append(StepProfiler(recipe.train.profile_steps, Path(recipe.output) / "profile"))
    if recipe.stage in PREFERENCE_STAGES:
        return make_preference_trainer(recipe, tokenizer, data, args, callbacks)
    model = load_model(recipe.model, recipe.tuning, tokenizer=tokenizer, packed=recipe.data.packing)
    model = apply_tuning(model, recipe.tuning)
    return LmforgeTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=Collator(tokenizer.pad_token_id, attn_implementation=attention_of(model)),
        processing_class=tokenizer,
        callbacks=callbacks,
        loss_chunk=recipe.train.loss_chunk,
    )


def training_arguments(recipe: Recipe, *, has_eval: bool) -> TrainingArguments:
    t = recipe.train
    precision = _mixed_precision(recipe)
    args: dict[str, Any] = dict(
        output_dir=recipe.output,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup if t.warmup < 1 else int(t.warmup),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        save_strategy="steps",
        save_steps=t.save_every,
        save_total_limit=t.keep,
        logging_steps=t.log_every,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_every or t.save_every,
        seed=t.seed,
        data_seed=t.seed,
        activation_checkpointing=t.activation_checkpointing,
        torch_compile=t.compile,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
    )
    if ranks.world_size() > 1 and ranks.on_cpu():
        args["use_cpu"] = True  # DDP over gloo; without it the Trainer sees no device to be distributed over
    args.update(strategy_arguments(recipe, precision, ranks.world_size()))
    if recipe.data.group_by_length:  # batches of similar lengths (LmforgeTrainer reads them from the arrays)
        args["train_sampling_strategy"] = "group_by_length"
    unknown = set(t.extra) - set(TrainingArguments.__dataclass_fields__)
    if unknown:
        raise LmforgeError(
            f"train.extra: {', '.join(sorted(unknown))} not TrainingArguments options "
            f"(train.extra passes options through to transformers.TrainingArguments as they are)"
        )
    args.update(t.extra)
    return TrainingArguments(**args)


def _check_trainable_attention(model) -> None:
    if attention_of(model) == "flex_attention" and not torch.cuda.is_available():
        raise LmforgeError(
            "model.attn_implementation: flex_attention has no backward pass on CPU in PyTorch, so it "
            "cannot train here; use sdpa (packing stays exact with a block-diagonal mask)"
        )


def attention_of(model) -> str | None:
    """The attention implementation the model runs with (after any fallback), which decides the batch layout."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def resolve_local_paths(recipe: Recipe) -> Recipe:
    """Make local model paths absolute so a saved adapter finds its base from any working directory."""
    model = recipe.model
    updates = {}
    for key in ("path", "tokenizer"):
        value = getattr(model, key)
        if value and Path(value).exists():
            updates[key] = str(Path(value).resolve())
    if not updates:
        return recipe
    return recipe.model_copy(update={"model": model.model_copy(update=updates)})


def _mixed_precision(recipe: Recipe) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype(recipe.model.dtype), "fp32")


def _report_dict(report: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(report).items()}


def _save_final(trainer, output: Path, recipe: Recipe, template, metrics, params) -> None:
    config = getattr(trainer.model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = True  # training turns the KV cache off; whoever loads the model next generates
    trainer.save_model(str(output))  # every rank: the Trainer writes on rank 0, gathering shards where needed
    if not ranks.is_main():
        return
    if template:
        (output / rundir.TEMPLATE_FILE).write_text(template, encoding="utf-8")
    rundir.write_model_card(output, recipe, metrics, params)
    write_loss_plot(output / rundir.PLOT_FILE, trainer.state.log_history)


def _stop_if_nan(trainer: LmforgeTrainer | PreferenceTrainer) -> None:
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, NanGuard) and cb.tripped_at is not None:
            raise LmforgeError(
                f"training loss became NaN/inf at step {cb.tripped_at}; lower train.lr, check the data with "
                f"`lmforge data inspect`, or use dtype fp32/bf16 instead of fp16"
            )


def _stop_if_asked(trainer: LmforgeTrainer | PreferenceTrainer, output: Path) -> None:
    """A run stopped by SIGTERM or SIGINT has saved a checkpoint: say how to go on, and claim nothing more."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, StopOnSignal) and cb.stopped_by:
            step, total = trainer.state.global_step, trainer.state.max_steps
            raise RunStopped(
                f"stopped by {signal.Signals(cb.stopped_by).name} after step {step} of {total}; its checkpoint is "
                f"{output / f'checkpoint-{step}'} and no final model was written. Continue with "
                "`lmforge train RECIPE --resume` (the same recipe and overrides)",
                exit_code=exit_status(cb.stopped_by),
            )


def printer_class():
    from transformers.trainer_callback import PrinterCallback

    return PrinterCallback


def _summary(metrics: dict[str, Any]) -> str:
    keys = ("train_loss", "eval_loss", "train_runtime")
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
