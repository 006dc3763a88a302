"""End to end through the `lmforge` command, as a user runs it, on a tiny local model."""

from __future__ import annotations

import json
import re

import yaml

from cli_runs import lmforge, losses, recipe, write_chat, write_text


def test_help_is_short_and_useful(tmp_path):
    top = lmforge("--help", cwd=tmp_path)
    assert top.returncode == 0
    commands, examples = top.stdout.split("examples:")
    for verb in ("train", "data", "chat", "score", "quickstart"):
        assert re.search(rf"^    {verb}\b", commands, re.M), verb  # each command listed with its one-line help
    assert "inspect" not in commands and "lmforge data inspect" in examples  # sub-commands: in their own help
    for verb in (["train"], ["data", "inspect"], ["chat"], ["quickstart"]):
        out = lmforge(*verb, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "usage: lmforge" in out.stdout
        assert len(out.stdout.splitlines()) < 30
    assert "--preference" in lmforge("quickstart", "--help", cwd=tmp_path).stdout


def test_pt_run_writes_a_complete_run_dir(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"))
    out = lmforge("train", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run-pt"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.yaml", "run_info.json", "README.md"):
        assert (run / name).exists(), name
    info = json.loads((run / "run_info.json").read_text())
    assert info["lmforge"] and len(info["data"]["fingerprint"]) >= 16
    assert info["output"] == str(run.resolve())  # where it was written: an adapter's base is found after a move
    assert "trainable" in out.stderr and "trained tok/s" in out.stderr
    assert "train_loss" in (run / "README.md").read_text()
    assert json.loads((run / "config.json").read_text())["use_cache"] is True  # saved for generating


def test_sft_lora_run_saves_adapter_and_template(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"))
    out = lmforge("train", str(path), "data.eval.fraction=0.2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run-sft"
    assert (run / "adapter_config.json").exists() and (run / "chat_template.jinja").exists()
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["data"]["eval"]["fraction"] == 0.2 and saved["model"]["path"] == str(tiny_model_dir.resolve())
    assert "eval_loss" in json.loads((run / "metrics.json").read_text())


def test_resume_continues_exactly_from_the_saved_step(tmp_path, tiny_model_dir):
    """The resumed steps' losses, and metrics.json over the whole run (not the resumed steps only); a harmless
    override is applied and recorded in run_info.json."""
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"))
    run = tmp_path / "run-sft"
    assert lmforge("train", str(path), cwd=tmp_path).returncode == 0
    straight = losses(run / "checkpoint-4" / "trainer_state.json")
    straight_metrics = json.loads((run / "metrics.json").read_text())
    import shutil

    shutil.rmtree(run / "checkpoint-4")  # as if the run died after its step-2 checkpoint
    out = lmforge("train", str(path), "--resume", "train.save_every=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "resuming from" in out.stderr and "checkpoint-2" in out.stderr
    assert "--resume applies train.save_every: 2 -> 1" in out.stderr
    resumed = losses(run / "checkpoint-4" / "trainer_state.json")
    assert resumed == straight  # every step's loss, to the bit
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trained_tokens"] == straight_metrics["trained_tokens"] > 0
    assert metrics["train_loss"] == straight_metrics["train_loss"]
    assert metrics["resumes"] == 1 and straight_metrics["resumes"] == 0
    (record,) = json.loads((run / "run_info.json").read_text())["resumes"]
    assert record["step"] == 2 and record["changed"] == {"train.save_every": [2, 1]}
    assert (run / "checkpoint-3").is_dir()  # the override applied


def test_output_guard(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"), max_steps=1)
    assert lmforge("train", str(path), cwd=tmp_path).returncode == 0
    again = lmforge("train", str(path), cwd=tmp_path)
    assert again.returncode == 2
    assert "already holds files" in again.stderr and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert lmforge("train", str(path), "--overwrite", cwd=tmp_path).returncode == 0
    fresh = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"))
    nothing = lmforge("train", str(fresh), "output=" + str(tmp_path / "new"), "--resume", cwd=tmp_path)
    assert nothing.returncode == 2 and "no checkpoint" in nothing.stderr


def test_bad_recipe_fails_with_the_key(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "pt", write_text(tmp_path / "text.jsonl"))
    out = lmforge("train", str(path), "train.batchsize=2", cwd=tmp_path)
    assert out.returncode == 2
    assert "train.batchsize" in out.stderr and "did you mean 'batch_size'" in out.stderr
    assert "Traceback" not in out.stderr


def test_sft_with_packing_reports_efficiency(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"), max_steps=2)
    out = lmforge(
        "train", str(path), "data.packing=true", "data.max_length=256", "data.eval.fraction=0.2", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "packing efficiency" in out.stderr and "attention: lmforge_varlen" in out.stderr  # auto, packed
    info = json.loads((tmp_path / "run-sft" / "run_info.json").read_text())
    assert 0 < info["data"]["packing_efficiency"] <= 1


def test_profile_steps_write_an_operator_summary_and_a_timeline(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"), max_steps=5, profile_steps=2)
    out = lmforge("train", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    profiled = tmp_path / "run-sft" / "profile"
    summary = (profiled / "summary.txt").read_text()
    assert summary.startswith("steps 3-4 recorded (2 of train.profile_steps 2), after 2 warm-up steps")
    assert "Self CPU" in summary and "aten::" in summary  # torch.profiler's operator table
    assert json.loads((profiled / "trace.json").read_text())["traceEvents"]
    assert f"profiled steps 3-4: {profiled / 'summary.txt'}" in out.stderr


def test_profile_steps_beyond_max_steps_fail_with_the_key(tmp_path, tiny_model_dir):
    path = recipe(tmp_path, tiny_model_dir, "sft", write_chat(tmp_path / "chat.jsonl"), max_steps=3, profile_steps=2)
    out = lmforge("train", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train: profile_steps 2 (recorded after 2 warm-up steps) need max_steps >= 4 (it is 3)\n" in out.stderr


def test_a_run_shorter_than_the_warm_up_says_nothing_was_profiled(tmp_path, tiny_model_dir):
    path = recipe(
        tmp_path,
        tiny_model_dir,
        "sft",
        write_chat(tmp_path / "chat.jsonl", n=8),
        max_steps=None,
        epochs=1,
        profile_steps=2,
    )  # 8 chats, batch 4: 2 steps, both warm-up
    out = lmforge("train", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the run ended after 2 steps, before any step after the 2 warm-up steps; nothing recorded" in out.stderr
    assert not (tmp_path / "run-sft" / "profile").exists()


def test_a_run_that_ends_inside_the_profiled_steps_writes_the_steps_it_had(tmp_path, tiny_model_dir):
    path = recipe(
        tmp_path,
        tiny_model_dir,
        "sft",
        write_chat(tmp_path / "chat.jsonl", n=12),
        max_steps=None,
        epochs=1,
        profile_steps=5,
    )  # 12 chats, batch 4: 3 steps, the last one recorded
    out = lmforge("train", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = (tmp_path / "run-sft" / "profile" / "summary.txt").read_text()
    assert summary.startswith("steps 3-3 recorded (1 of train.profile_steps 5)") and "aten::" in summary
