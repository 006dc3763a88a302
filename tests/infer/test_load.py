"""The one run loader: full and adapter runs, the template a run saved, a moved base, a reward run's head."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_runs import logits as _logits
from tiny_runs import save_lora
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lmforge.config.recipe import ModelSpec, TuningSpec
from lmforge.errors import LmforgeError
from lmforge.infer.load import LoadedRun, load_run
from lmforge.model.load import load_reward_model
from lmforge.train.rundir import ADAPTER_CONFIG, TEMPLATE_FILE


def test_a_full_run_loads_as_saved(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run)
    loaded = load_run(run)
    assert isinstance(loaded, LoadedRun) and not loaded.model.training
    expected = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.testing.assert_close(_logits(loaded.model), _logits(expected))
    assert loaded.template == AutoTokenizer.from_pretrained(str(tiny_model_dir)).chat_template


def test_the_template_the_run_saved_comes_first(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run)
    (run / TEMPLATE_FILE).write_text("{{ 'saved template' }}")
    assert load_run(run).template == "{{ 'saved template' }}"


def test_a_run_without_any_template_says_where_to_put_it(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run)
    config = json.loads((run / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (run / "tokenizer_config.json").write_text(json.dumps(config))
    (run / "chat_template.jinja").unlink(missing_ok=True)  # where newer transformers keep the tokenizer's own
    with pytest.raises(LmforgeError, match=f"no {TEMPLATE_FILE} and its tokenizer no chat template"):
        load_run(run)


def test_an_adapter_run_loads_on_its_base_with_the_bases_tokenizer(tmp_path, tiny_model_dir):
    from peft import PeftModel

    trained = save_lora(tiny_model_dir, tmp_path / "adapter")
    loaded = load_run(tmp_path / "adapter")  # no tokenizer saved with it: the base's
    assert isinstance(loaded.model, PeftModel)
    torch.testing.assert_close(_logits(loaded.model), _logits(trained))
    assert loaded.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(tiny_model_dir)).get_vocab()
    assert "<|im_start|>" in loaded.template


def test_an_adapter_whose_base_moved_says_which_key_to_edit(tmp_path, tiny_model_dir):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    save_lora(base, tmp_path / "adapter")
    shutil.move(base, tmp_path / "elsewhere")
    with pytest.raises(LmforgeError) as err:
        load_run(tmp_path / "adapter")
    message = str(err.value)
    assert str(tmp_path / "adapter" / ADAPTER_CONFIG) in message and repr(str(base)) in message
    assert "is not a local directory" in message and "edit that key to where the base model is" in message


def test_what_is_not_a_run_is_an_lmforge_error(tmp_path):
    with pytest.raises(LmforgeError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmforgeError, match="neither a model"):
        load_run(tmp_path / "empty")


def reward_run(tmp_path, tiny_model_dir):
    """A full reward run as stage rm saves one: the model with its one-output head, the tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = load_reward_model(ModelSpec(path=str(tiny_model_dir)), TuningSpec(method="full"), tokenizer)
    run = tmp_path / "rm"
    model.save_pretrained(str(run))
    tokenizer.save_pretrained(str(run))
    return run, model.eval()


def test_a_reward_run_loads_with_its_reward_head(tmp_path, tiny_model_dir):
    run, saved = reward_run(tmp_path, tiny_model_dir)
    config = json.loads((run / "config.json").read_text())
    del config["pad_token_id"]  # a run saved without it: the reward needs it to find the last token
    (run / "config.json").write_text(json.dumps(config))
    loaded = load_run(run, head="reward")
    assert type(loaded.model).__name__.endswith("ForSequenceClassification") and loaded.model.config.num_labels == 1
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id
    torch.testing.assert_close(_logits(loaded.model), _logits(saved))
    assert _logits(loaded.model).shape == (1, 1)


def test_a_reward_adapter_loads_on_its_base_with_one_output(tmp_path, tiny_model_dir):
    from peft import PeftModel

    trained = save_lora(
        tiny_model_dir, tmp_path / "adapter", "SEQ_CLS", AutoModelForSequenceClassification, num_labels=1
    )
    loaded = load_run(tmp_path / "adapter", head="reward")
    assert isinstance(loaded.model, PeftModel) and loaded.model.config.num_labels == 1
    torch.testing.assert_close(_logits(loaded.model), _logits(trained))


def test_a_language_model_run_is_no_reward_model(tmp_path, tiny_model_dir):
    with pytest.raises(LmforgeError, match="is not a reward model .* pass the output directory of a stage rm run"):
        load_run(tiny_model_dir, head="reward")


def test_device_and_dtype_are_chosen_and_checked(tmp_path, tiny_model_dir):
    from lmforge.infer.device import pick_device, pick_dtype

    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert pick_device("auto") == torch.device("cpu") and pick_dtype("auto", torch.device("cpu")) == torch.float32
        with pytest.raises(LmforgeError, match="--device cuda: this machine has no CUDA device"):
            pick_device("cuda")
    with pytest.raises(LmforgeError, match="--device 'gpu' is not a device; use auto, cuda"):
        pick_device("gpu")
    with pytest.raises(LmforgeError, match="--dtype 'half' is unknown; use auto, bf16, fp16, fp32"):
        pick_dtype("half", torch.device("cpu"))
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run)
    loaded = load_run(run, device="cpu", dtype="bf16")
    assert loaded.model.dtype == torch.bfloat16 and loaded.model.device == torch.device("cpu")
    expected = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16).eval()
    torch.testing.assert_close(_logits(loaded.model), _logits(expected))


def test_an_adapter_run_moved_with_its_base_still_loads(tmp_path, tiny_model_dir):
    """Runs moved together (e.g. runs/ copied to another machine): the base is found where it sits relative to
    the run as it was written (run_info.json's output), not at its old absolute path."""
    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old / "pt")
    trained = save_lora(old / "pt", old / "sft")
    (old / "sft" / "run_info.json").write_text(json.dumps({"output": str(old / "sft")}))
    shutil.move(old, tmp_path / "new")
    loaded = load_run(tmp_path / "new" / "sft")
    torch.testing.assert_close(_logits(loaded.model), _logits(trained))
    shutil.rmtree(tmp_path / "new" / "pt")
    with pytest.raises(LmforgeError, match=r"is not a local directory, nor is .*new/pt \(where it would be had it"):
        load_run(tmp_path / "new" / "sft")


def test_an_adapter_given_apart_loads_on_the_model_given(tmp_path, tiny_model_dir):
    trained = save_lora(tiny_model_dir, tmp_path / "adapter")
    loaded = load_run(tiny_model_dir, adapter=tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded.model), _logits(trained))
    (tmp_path / "adapter" / TEMPLATE_FILE).write_text("{{ 'the adapter run template' }}")
    assert load_run(tiny_model_dir, adapter=tmp_path / "adapter").template == "{{ 'the adapter run template' }}"
    with pytest.raises(LmforgeError, match=f"--adapter {tmp_path}: no {ADAPTER_CONFIG} there"):
        load_run(tiny_model_dir, adapter=tmp_path)


def test_a_checkpoint_loads_with_its_runs_template(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "checkpoint-20")
    (run / TEMPLATE_FILE).write_text("{{ 'the run template' }}")
    assert load_run(run / "checkpoint-20").template == "{{ 'the run template' }}"
    shutil.copytree(tiny_model_dir, run / "best")  # not a checkpoint: its own (tokenizer's) template
    assert load_run(run / "best").template != "{{ 'the run template' }}"


def test_a_hub_id_that_cannot_be_fetched_says_so(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: no network tried
    with pytest.raises(LmforgeError, match="no-such-org/no-such-model is neither a local folder nor a model"):
        load_run("no-such-org/no-such-model")
