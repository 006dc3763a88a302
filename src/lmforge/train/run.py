"""`lmforge train`: recipe in, trained run directory out. Reads top to bottom as the algorithm."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
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
from lmforge.train import checkpoints, ranks, rundir
from lmforge.train.callbacks import OnFirstStep
from lmforge.train.collate import Collator
from lmforge.train.ledger import RunLedger
from lmforge.train.lock import RunLock
from lmforge.train.plot import write_run_plots
from lmforge.train.preempt import StopOnSignal, exit_status
from lmforge.train.preference import PreferenceTrainer, make_preference_trainer
from lmforge.train.profile import StepProfiler
from lmforge.train.progress import progress_callback
from lmforge.train.resume import ResumePoint, check_resume, check_same_data, record_resume, train_or_finish
from lmforge.train.strategy import start_deepspeed, strategy_arguments
from lmforge.train.trackers import check_trackers, tracker_callbacks
from lmforge.train.trainer import LmforgeTrainer

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer


def run_training(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, weights_only: bool = False) -> Path:
    """Train as the recipe says and return the output directory holding the final model or adapter.

    Rank 0 holds the output's run lock (lock.py) from before it looks at the output to the end. Nothing is
    written to the output until the tokenizer and the data are ready; from then on a failure before the first
    optimizer step undoes the start (rundir.RunStart). A run stopped by SIGTERM or SIGINT keeps its checkpoint,
    writes nothing that claims a finished run and raises RunStopped. `--resume` continues the same run, or
    refuses before anything is written (resume.py). `weights_only` (--resume-weights-only) loads the newest
    checkpoint's weights and starts the optimizer, schedule and data order from step 0.
    """
    recipe = resolve_local_paths(recipe)
    output = Path(recipe.output)
    check_trackers(recipe.train.report_to)  # a missing tracker package is said now, not after the data work
    ranks.start()  # several processes (torchrun): rank 0 writes the run directory, see ranks.py
    with _run_lock(output):
        return _train(recipe, output, resume=resume, overwrite=overwrite, weights_only=weights_only)


@contextmanager
def _run_lock(output: Path) -> Iterator[None]:
    """Rank 0 takes the output's lock; every rank learns whether it did, so none waits for a rank that stopped."""
    lock, error = RunLock(output), None
    if ranks.is_main():
        try:
            lock.acquire()
        except LmforgeError as err:
            error = err
    if not ranks.all_ok(error is None):
        raise error or LmforgeError(f"rank 0 could not take the run lock of {output}; see its message")
    try:
        yield
    finally:
        lock.release()


def _train(recipe: Recipe, output: Path, *, resume: bool, overwrite: bool, weights_only: bool) -> Path:
    plan = rundir.check_output(output, resume=resume, overwrite=overwrite, weights_only=weights_only)
    _say_choice(plan)
    point = check_resume(recipe, output, plan.checkpoint) if plan.checkpoint and not plan.weights_only else None
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
        first_step = (lambda: _first_step_done(trainer, run)) if run else None  # called during trainer.train
        trainer = make_trainer(recipe, tokenizer, data, on_first_step=first_step, extra_callbacks=(ledger,))
        trainer.tokens.continue_from(ledger.trained_tokens)
        model = trainer.model
        _check_trainable_attention(model)
        say(f"lmforge: {describe_trainable(model)}; attention: {attention_of(model)}")
        trainer.remove_callback(printer_class())
        if plan.weights_only:
            _load_weights_only(trainer, plan)
            session = trainer.train().metrics
        else:
            session = train_or_finish(trainer, point, plan.checkpoint)
        _stop_if_nan(trainer, output)  # in the start: a run whose very first step is NaN undoes its start
    _stop_if_asked(trainer, output)
    _say_skipped(trainer)

    metrics = ledger.whole_run(session, trainer.state.global_step, point.step if point else 0)
    metrics["trained_tokens"] = trainer.tokens.job_total()
    if trainer.nan_watch.skipped:
        metrics["nan_skipped_steps"] = len(trainer.nan_watch.skipped)
    if torch.cuda.is_available():
        metrics["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if data.eval is not None:
        metrics.update(_final_eval(trainer))
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
    if run.plan.checkpoint is None:
        rundir.write_run_start(output, recipe, _report_dict(data.report))
        return
    removed = checkpoints.remove_partials(output)
    if removed:
        say(f"lmforge: removed {', '.join(removed)}, left by a save that did not finish")
    if point is not None:
        record_resume(point)


def _new_ledger(recipe: Recipe, fingerprint: str) -> RunLedger:
    """The ledger a new run's checkpoints carry (ledger.py)."""
    return RunLedger(recipe=recipe.model_dump(mode="json"), fingerprint=fingerprint, world_size=ranks.world_size())


def _first_step_done(trainer: LmforgeTrainer | PreferenceTrainer, run: rundir.RunStart) -> None:
    """The first optimizer step has finished: the run has started (RunStart.started), unless the NaN guard
    stopped that very step, which is no work to replace an old run with."""
    if trainer.nan_watch.tripped_at is None:
        run.started()


def _say_choice(plan: rundir.OutputPlan) -> None:
    """One line for each newer checkpoint `--resume` passes over, and one for a checkpoint without a marker."""
    if plan.choice is None:
        return
    for name, why in plan.choice.skipped:
        say(f"lmforge: --resume: skipping {name}: {why}")
    if plan.choice.unmarked:
        say(
            f"lmforge: --resume: {plan.checkpoint} has no completion marker (written by an older lmforge); "
            "every file a resume reads is there and reads, so it is used"
        )


def _load_weights_only(trainer, plan: rundir.OutputPlan) -> None:
    """--resume-weights-only: the checkpoint's weights, then a new optimizer, schedule and data order."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise LmforgeError(
            "--resume-weights-only cannot load weights into a model DeepSpeed ZeRO-3 has already partitioned; "
            "copy the checkpoint folder out of the output, set model.path to the copy and start a new run"
        )
    trainer._load_from_checkpoint(plan.checkpoint)
    trainer.earlier_checkpoints = checkpoints.checkpoint_dirs(plan.output)
    say(
        f"lmforge: --resume-weights-only: loaded the weights of {plan.checkpoint}; the optimizer, learning-rate "
        "schedule and data order start again from step 0"
    )


def make_trainer(
    recipe: Recipe, tokenizer: Tokenizer, data, on_first_step=None, extra_callbacks: tuple = ()
) -> LmforgeTrainer | PreferenceTrainer:
    """The model and trainer of the recipe's stage family: pt/sft here, rm and the rest in preference.py."""
    args = training_arguments(recipe, has_eval=data.eval is not None)
    start_deepspeed(recipe)
    trackers = tracker_callbacks(recipe.train.report_to, Path(recipe.output))
    callbacks = [progress_callback(), StopOnSignal(), *trackers, *extra_callbacks]
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
        on_nan=recipe.train.on_nan,
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
        report_to="none",  # the trackers of train.report_to are lmforge's callbacks (trackers.py says why)
        run_name=Path(recipe.output).name,  # the trackers' name for the run
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
    rundir.write_log_history(output, trainer.state.log_history)
    write_run_plots(output, output.name, trainer.state.log_history, (rundir.PLOT_PNG, rundir.PLOT_FILE))


def _final_eval(trainer: LmforgeTrainer | PreferenceTrainer) -> dict[str, float]:
    """The eval metrics of the finished model: the Trainer evaluates after the last step by itself (eval_strategy
    steps), so those are taken from its log rather than evaluated, and printed, a second time."""
    logged = next((entry for entry in reversed(trainer.state.log_history) if "eval_loss" in entry), {})
    if logged.get("step") == trainer.state.global_step:
        return {k: v for k, v in logged.items() if k.startswith("eval_")}
    return trainer.evaluate()


def _stop_if_nan(trainer: LmforgeTrainer | PreferenceTrainer, output: Path) -> None:
    """A run stopped by the NaN guard (nan_guard.py): which step, what survives, what to try."""
    step = trainer.nan_watch.tripped_at
    if step is None:
        return
    good = checkpoints.newest_complete(output)
    kept = f"the newest checkpoint, {good}, is from before it" if good else "no checkpoint was saved before it"
    if step == 1 and good is None:  # the very first step: RunStart undoes the start
        kept = "it was the run's first step, so the output is left as it was before the run"
    raise LmforgeError(
        f"the training loss or gradient norm became NaN/inf at step {step}; the run stopped there: {kept}, "
        f"nothing after it was saved and no final model was written. Lower train.lr, check the data with "
        f"`lmforge data inspect`, use dtype bf16 or fp32 instead of fp16, or set train.on_nan: skip to skip "
        f"such steps"
    )


def _say_skipped(trainer: LmforgeTrainer | PreferenceTrainer) -> None:
    skipped = trainer.nan_watch.skipped
    if skipped:
        steps = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        say(
            f"lmforge: train.on_nan: skip: {len(skipped)} of {trainer.state.global_step} optimizer steps had a "
            f"NaN/inf loss or gradient norm and changed nothing (steps {steps})"
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
