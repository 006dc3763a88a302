"""Preference stages through the one PreferenceTrainer on a tiny model: the reward model (its loss, its head under
each tuning method, end to end through the CLI), reference handling, metrics, KTO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, TrainingArguments

from lmforge.config.recipe import PreferenceSpec, Recipe
from lmforge.data.examples import trained_tokens
from lmforge.model.load import REWARD_HEAD
from lmforge.train.preference import KTOCollator, PairCollator, PreferenceTrainer, make_preference_trainer

from recipe_builds import build

TRL_PAIR_METRICS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
}


def write_pairs(path: Path, n: int = 8) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus 2?"}],
            "chosen": f"{i} plus 2 is {i + 2}.",
            "rejected": f"{i} plus 2 is {i + 3}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_kto(path: Path, n: int = 8) -> Path:
    rows = [
        {"prompt": f"What is {i} plus 2?", "completion": f"{i} plus 2 is {i + 2 + i % 2}.", "label": i % 2 == 0}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe_for(
    tmp_path: Path, model_dir: Path, stage: str, method: str, data: Path, tuning: dict | None = None, **pref
) -> Recipe:
    return Recipe(
        stage=stage,
        model={"path": str(model_dir)},
        tuning=tuning or {"method": method, "lora": {"r": 4}},
        data={"train": [{"path": str(data)}], "max_length": 64},
        train={"max_steps": 1, "batch_size": 4, "lr": 1e-3, "log_every": 1},
        preference=pref or None,
        output=str(tmp_path / "out"),
    )


def trainer_for(recipe: Recipe, tokenizer) -> PreferenceTrainer:
    data = build(recipe, tokenizer)
    args = TrainingArguments(
        output_dir=recipe.output,
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-3,
        report_to="none",
        remove_unused_columns=False,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    return make_preference_trainer(recipe, tokenizer, data, args, callbacks=[])


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _held_models(trainer) -> list[torch.nn.Module]:
    """Every model the trainer holds (attributes that are modules), and the backbones inside them."""
    held = [v for v in vars(trainer).values() if isinstance(v, torch.nn.Module)]
    return [m for h in {id(h): h for h in held}.values() for m in h.modules() if type(m).__name__ == "LlamaModel"]


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# --- reward model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_rm_loss_is_the_pairwise_loss_on_the_heads_output(tmp_path, tiny_model_dir, tokenizer, margin):
    recipe = recipe_for(tmp_path, tiny_model_dir, "rm", "full", write_pairs(tmp_path / "p.jsonl"), margin=margin)
    trainer = trainer_for(recipe, tokenizer)
    assert trainer.stage == "rm" and trainer.reference is None and trainer.ref_model is None
    batch = PairCollator(tokenizer.pad_token_id)(trainer.train_dataset[:4])
    loss, metrics = trainer.pair_loss(trainer.model, batch)
    with torch.no_grad():
        rewards = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    chosen, rejected = rewards[:4], rewards[4:]
    expected = -torch.nn.functional.logsigmoid(chosen - rejected - margin).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert metrics["margin"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-6)  # without m


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_reward_model_trains_the_adapter_and_the_head(tmp_path, tiny_model_dir, tokenizer, method):
    from peft import PeftModelForSequenceClassification

    recipe = recipe_for(tmp_path, tiny_model_dir, "rm", method, write_pairs(tmp_path / "p.jsonl"))
    trainer = trainer_for(recipe, tokenizer)
    assert isinstance(trainer.model, PeftModelForSequenceClassification)
    before = _trainable(trainer.model)
    head = f"base_model.model.{REWARD_HEAD}.modules_to_save.default.weight"
    assert {n for n in before if "lora_" not in n} == {head}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert head in moved and any("lora_B" in n for n in moved)


def test_freeze_reward_model_trains_the_last_layers_and_the_head(tmp_path, tiny_model_dir, tokenizer):
    recipe = recipe_for(
        tmp_path,
        tiny_model_dir,
        "rm",
        "freeze",
        write_pairs(tmp_path / "p.jsonl"),
        tuning={"method": "freeze", "freeze": {"layers": 1}},
    )
    names = set(_trainable(trainer_for(recipe, tokenizer).model))
    assert f"{REWARD_HEAD}.weight" in names and all(n.startswith(("model.layers.", f"{REWARD_HEAD}.")) for n in names)


def test_rm_logs_its_metrics_and_the_trained_tokens(tmp_path, tiny_model_dir, tokenizer):
    recipe = recipe_for(tmp_path, tiny_model_dir, "rm", "full", write_pairs(tmp_path / "p.jsonl", n=4))
    trainer = trainer_for(recipe, tokenizer)
    batch = PairCollator(tokenizer.pad_token_id)(trainer.train_dataset[:4])
    trainer.train()
    logged = trainer.state.log_history[0]
    assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward", "trained_tokens_per_second"} <= set(logged)
    assert logged["trained_tokens"] == trainer.tokens.trained == trained_tokens(batch["labels"])


# --- dpo, simpo, orpo, kto -------------------------------------------------------------------------


def test_lora_dpo_uses_the_model_with_its_adapter_disabled(tmp_path, tiny_model_dir, tokenizer):
    recipe = recipe_for(tmp_path, tiny_model_dir, "dpo", "lora", write_pairs(tmp_path / "p.jsonl"))
    trainer = trainer_for(recipe, tokenizer)
    assert trainer.reference == "adapter" and trainer.ref_model is None  # no second copy of the model
    assert len(_held_models(trainer)) == 1
    batch = PairCollator(tokenizer.pad_token_id)(trainer.train_dataset[:4])
    loss, metrics = trainer.pair_loss(trainer.model, batch)
    # A fresh LoRA adapter changes nothing (B = 0): policy = reference, so every reward is 0 and the loss log 2.
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert TRL_PAIR_METRICS <= set(metrics)
    result = trainer.train()
    logged = trainer.state.log_history[0]
    assert TRL_PAIR_METRICS <= set(logged) and result.training_loss > 0


def test_full_dpo_keeps_a_frozen_copy(tmp_path, tiny_model_dir, tokenizer):
    recipe = recipe_for(tmp_path, tiny_model_dir, "dpo", "full", write_pairs(tmp_path / "p.jsonl"), loss="ipo")
    trainer = trainer_for(recipe, tokenizer)
    ref, policy = trainer.ref_model, trainer.model
    assert trainer.reference == "copy" and ref is not None and not ref.training
    assert len(_held_models(trainer)) == 2
    assert not any(p.requires_grad for p in ref.parameters())
    before = [p.detach().clone() for p in ref.parameters()]
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, ref.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


@pytest.mark.parametrize("cache", ["miss", "hit"])  # a hit gives rows built from the arrays on each read
def test_precomputed_reference_is_stored_with_the_examples(tmp_path, tiny_model_dir, tokenizer, cache):
    recipe = recipe_for(
        tmp_path, tiny_model_dir, "dpo", "full", write_pairs(tmp_path / "p.jsonl"), precompute_reference=True
    )
    recipe.data.cache_dir = str(tmp_path / "cache")
    if cache == "hit":
        build(recipe, tokenizer)
    trainer = trainer_for(recipe, tokenizer)
    assert build(recipe, tokenizer).report.cache == "hit"
    assert trainer.ref_model is None  # freed after scoring the data
    rows = trainer.train_dataset[:4]
    assert all("reference_chosen_logps" in r and "reference_rejected_logps" in r for r in rows)
    batch = PairCollator(tokenizer.pad_token_id)(rows)
    loss, metrics = trainer.pair_loss(trainer.model, batch)  # the model has not moved: rewards are 0
    assert metrics["rewards/chosen"] == pytest.approx(0.0, abs=1e-5) and loss.item() == pytest.approx(0.6931, abs=1e-4)


@pytest.mark.parametrize("stage", ["simpo", "orpo"])
def test_reference_free_stages_take_a_step(tmp_path, tiny_model_dir, tokenizer, stage):
    trainer = trainer_for(
        recipe_for(tmp_path, tiny_model_dir, stage, "lora", write_pairs(tmp_path / "p.jsonl")), tokenizer
    )
    assert trainer.reference is None and trainer.ref_model is None
    trainer.train()
    assert "rewards/margins" in trainer.state.log_history[0]


def test_kto_step_with_mismatched_pairs(tmp_path, tiny_model_dir, tokenizer):
    recipe = recipe_for(
        tmp_path,
        tiny_model_dir,
        "kto",
        "lora",
        write_kto(tmp_path / "k.jsonl"),
        desirable_weight=1.0,
        undesirable_weight=1.5,
    )
    trainer = trainer_for(recipe, tokenizer)
    batch = KTOCollator(tokenizer.pad_token_id)(trainer.train_dataset[:4])
    assert batch["desirable"].tolist() == [True, False, True, False]
    loss, metrics = trainer.pair_loss(trainer.model, batch)
    # policy = reference: every v is λ σ(0) = λ/2, so the loss is the mean of λ_y / 2.
    assert loss.item() == pytest.approx((1.0 + 1.5) / 4, abs=1e-5)
    assert {"kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "rewards/margins"} <= set(metrics)
    trainer.train()
    assert "kl" in trainer.state.log_history[0]


def test_recipe_checks_the_reference():
    base = {"model": {"path": "m"}, "data": {"train": [{"path": "d"}]}, "output": "o"}
    assert PreferenceSpec().reference_for("qlora") == "adapter" and PreferenceSpec().reference_for("full") == "copy"
    with pytest.raises(ValueError, match="adapter needs an adapter"):
        Recipe(stage="dpo", tuning={"method": "full"}, preference={"reference": "adapter"}, **base)
    with pytest.raises(ValueError, match="preference section is for stages"):
        Recipe(stage="sft", preference={}, **base)
    with pytest.raises(ValueError, match="label_smoothing applies to loss sigmoid"):
        Recipe(stage="dpo", preference={"loss": "hinge", "label_smoothing": 0.1}, **base)


def test_rm_trains_through_the_cli_and_scores(tmp_path, tiny_model_dir):
    data = write_pairs(tmp_path / "p.jsonl", n=12)
    recipe = {
        "stage": "rm",
        "model": {"path": str(tiny_model_dir)},
        "tuning": {"method": "full"},
        "data": {"train": [{"path": str(data)}], "max_length": 64, "eval": {"fraction": 0.25}},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1, "save_every": 10},
        "preference": {"margin": 0.5},
        "output": str(tmp_path / "rm"),
    }
    (tmp_path / "rm.yaml").write_text(yaml.safe_dump(recipe))
    run = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "train", "rm.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_margin"} <= set(metrics)
    convs = tmp_path / "c.jsonl"
    convs.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "What is 1 plus 2?"},
                    {"role": "assistant", "content": "1 plus 2 is 3."},
                ]
            }
        )
        + "\n"
    )
    scored = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "score", "rm", "--messages", str(convs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert scored.returncode == 0, scored.stderr
    from lmforge.infer.score import score_conversation

    value = score_conversation(tmp_path / "rm", json.loads(convs.read_text())["messages"])
    assert float(scored.stdout.strip()) == pytest.approx(value, rel=1e-4)
