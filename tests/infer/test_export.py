"""`lmforge export`: a merged adapter gives the adapter's logits from a plain folder, with the run's template and
stop tokens; nothing is written into an existing folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_runs import logits as _logits
from tiny_runs import save_lora
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lmforge.cli import main
from lmforge.data.chat.masks import generation_prompt
from lmforge.errors import LmforgeError
from lmforge.infer.chat import stop_token_ids
from lmforge.infer.export import export
from lmforge.train.rundir import TEMPLATE_FILE

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7 times 6?"}]


def test_a_merged_adapter_reproduces_the_adapter_and_the_prompts(tmp_path, tiny_model_dir):
    trained = save_lora(tiny_model_dir, tmp_path / "run")
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}" + (
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    (tmp_path / "run" / TEMPLATE_FILE).write_text(template)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) in (0, None)
    out = tmp_path / "out"
    assert not (out / "adapter_config.json").exists() and list(out.glob("*.safetensors"))
    plain = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    torch.testing.assert_close(_logits(plain), _logits(trained), atol=1e-4, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert (out / TEMPLATE_FILE).read_text() == template
    ours = generation_prompt(tokenizer, template, MESSAGES)
    assert tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == ours
    eos = GenerationConfig.from_pretrained(str(out)).eos_token_id
    assert set(eos if isinstance(eos, list) else [eos]) == set(stop_token_ids(tokenizer, template))
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert not list(tmp_path.glob(".out.partial*"))


def test_export_never_writes_into_an_existing_folder(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(LmforgeError, match=f"--out {out} exists and is not an empty folder"):
        export(tiny_model_dir, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    shutil.rmtree(out)
    out.mkdir()  # an empty folder is fine
    export(tiny_model_dir, out, dtype="bf16")
    assert AutoModelForCausalLM.from_pretrained(str(out)).dtype == torch.bfloat16
