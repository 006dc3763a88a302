"""The card `lmforge export` writes: Hugging Face metadata that huggingface_hub parses, the run's figures and
template in the body, and nothing the run did not record."""

from __future__ import annotations

from huggingface_hub import ModelCard
from tiny_runs import save_lora

from lmforge.config.recipe import Recipe
from lmforge.infer.export import export
from lmforge.train.rundir import TEMPLATE_FILE, write_model_card, write_run_start

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}<assistant>"


def test_the_card_of_a_lora_run(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    save_lora(tiny_model_dir, run)
    recipe = Recipe(
        stage="sft",
        model={"path": "someone/base-model"},  # the name the run's recipe gives; the adapter's base is local
        tuning={"method": "lora"},
        data={"train": [{"hub": "someone/chats"}, {"path": "data/extra.jsonl"}], "max_length": 256},
        output=str(run),
    )
    write_run_start(run, recipe, {"fingerprint": "abc123"})
    write_model_card(run, recipe, {"train_loss": 1.23456, "eval_loss": 1.5, "train_steps": 40}, (10, 100))
    (run / TEMPLATE_FILE).write_text(TEMPLATE)
    out = export(run, tmp_path / "out")
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["base_model"] == "someone/base-model" and meta["datasets"] == ["someone/chats"]
    assert meta["tags"] == ["lmforge", "sft", "lora"] and "license" not in meta
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "| train_loss | 1.235 |" in card.text and "| train_steps | 40 |" in card.text
    assert f"```jinja\n{TEMPLATE}\n```" in card.text
    assert "stage `sft`, tuning `lora`, from `someone/base-model`" in card.text
    assert "- data: hub:someone/chats, data/extra.jsonl (max_length 256)" in card.text
    assert "abc123" in card.text and 'from_pretrained("out")' in card.text


def test_a_plain_model_folder_gets_a_card_with_nothing_invented(tmp_path, tiny_model_dir):
    out = export(tiny_model_dir, tmp_path / "plain")
    meta = ModelCard.load(out / "README.md").data.to_dict()
    assert meta == {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": ["lmforge"]}
    text = (out / "README.md").read_text()
    assert "no lmforge run directory was found" in text and "Training figures" not in text
