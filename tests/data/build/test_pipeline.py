from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.config.recipe import Recipe
from lmforge.config.settings import data_settings
from lmforge.data.build import cache
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError

from recipe_builds import build
from shared_assets import PROMPT_NOT_A_PREFIX, SHARED, load, only

QWEN3 = SHARED / "tokenizers" / "qwen3"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Each test its own data cache, so no test reads another's (or the user's) entries."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def recipe(tok_dir: Path, train: Path, stage: str = "sft", template: str | None = None, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "stage": stage,
            "model": {"path": str(tok_dir), "chat_template": template},
            "data": {"train": [{"path": str(train)}], **data},
            "output": "unused",
        }
    )


def test_sft_examples_on_each_shared_tokenizer(shared_tokenizer_dir, tmp_path, capsys):
    train = shutil.copy(SHARED / "check" / "chat.jsonl", tmp_path / "chat.jsonl")
    tok = load(shared_tokenizer_dir)
    bundle = build(recipe(shared_tokenizer_dir, train, template=None if tok.chat_template else "llama2"), tok)
    assert bundle.eval is None
    # the first conversation has two assistant turns: one sample per turn where the prompt is never a prefix
    samples = 4 if shared_tokenizer_dir.name in PROMPT_NOT_A_PREFIX else 3
    assert len(bundle.train) == bundle.report.samples == samples
    for example in bundle.train:
        assert set(example) == {"input_ids", "labels"}
        assert len(example["input_ids"]) == len(example["labels"])
        assert all(label in (IGNORE_INDEX, token) for token, label in zip(example["input_ids"], example["labels"]))
    report = bundle.report
    assert (report.truncated, report.dropped, report.reasons) == (0, 0, {})
    assert report.tokens == sum(len(e["input_ids"]) for e in bundle.train)
    assert 0 < report.trained_tokens < report.tokens
    assert len(report.fingerprint) == 64
    assert f"lmforge: data: {samples} train samples from 3 records" in capsys.readouterr().err


@only("qwen3")
def test_truncation_cuts_the_end_and_drops_samples_without_trained_tokens(shared_tokenizer_dir, tmp_path, capsys):
    long_reply = chat("Count.", " ".join(str(k) for k in range(60)))
    long_prompt = chat("Read this: " + "word " * 60, "Done.")
    train = write_jsonl(tmp_path / "train.jsonl", [chat("Hi", "Hello."), long_reply, long_prompt])
    bundle = build(recipe(shared_tokenizer_dir, train, max_length=32), load(shared_tokenizer_dir))
    report = bundle.report
    assert (report.samples, report.truncated, report.dropped) == (2, 1, 1)  # truncated: kept, shortened
    assert report.reasons == {"no trained token within max_length 32": 1}
    assert len(bundle.train[1]["input_ids"]) == 32
    assert bundle.train[1]["labels"][-1] != IGNORE_INDEX  # the end of the reply was cut, its start kept
    err = capsys.readouterr().err
    assert "1 truncated to max_length 32, 1 dropped (1 no trained token within max_length 32)" in err


@only("qwen3")
def test_every_sample_dropped_is_an_error(shared_tokenizer_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat("Read this: " + "word " * 60, "Done.")])
    with pytest.raises(LmforgeError, match="no train sample is left of 1 records"):
        build(recipe(shared_tokenizer_dir, train, max_length=16), load(shared_tokenizer_dir))


@only("qwen3")
def test_eval_from_fraction_and_from_a_file(shared_tokenizer_dir, tmp_path):
    tok = load(shared_tokenizer_dir)
    train = write_jsonl(tmp_path / "train.jsonl", [chat(f"Q{k}", f"A{k}") for k in range(10)])
    held = write_jsonl(tmp_path / "held.jsonl", [chat("Q", "A"), chat("R", "B")])
    by_fraction = build(recipe(shared_tokenizer_dir, train, eval={"fraction": 0.3}), tok)
    assert (len(by_fraction.train), len(by_fraction.eval), by_fraction.report.eval_samples) == (7, 3, 3)
    by_file = build(recipe(shared_tokenizer_dir, train, eval={"path": str(held)}), tok)
    assert (len(by_file.train), len(by_file.eval)) == (10, 2)


@only("qwen3")
def test_fingerprint_follows_data_template_and_length(shared_tokenizer_dir, tmp_path):
    tok = load(shared_tokenizer_dir)
    train = write_jsonl(tmp_path / "train.jsonl", [chat("Hi", "Hello.")])
    base = recipe(shared_tokenizer_dir, train)

    def fingerprint(r: Recipe, template: str) -> str:
        data = data_settings(r, template)
        return cache.fingerprint(data, resolve_sources(data.sources, data.registry, data.stage), tok)

    first = fingerprint(base, "T")
    moved = shutil.copy(train, tmp_path / "moved.jsonl")
    assert fingerprint(recipe(shared_tokenizer_dir, moved), "T") == first  # paths are not hashed
    assert fingerprint(base, "T2") != first
    assert fingerprint(recipe(shared_tokenizer_dir, train, max_length=64), "T") != first
    train.write_text(train.read_text().replace("Hello.", "Hello!"))
    assert fingerprint(base, "T") != first


@only("qwen3")
def test_pretraining_blocks_and_packing(shared_tokenizer_dir, tmp_path, capsys):
    tok = load(shared_tokenizer_dir)
    texts = [f"Document {k} says " + "more " * (5 + 3 * k) for k in range(12)]
    train = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # + EOS each, no BOS
    blocks = build(recipe(shared_tokenizer_dir, train, stage="pt", max_length=16), tok)
    assert blocks.report.samples == total // 16
    assert blocks.report.dropped_tokens == total % 16
    assert all(len(e["input_ids"]) == 16 and e["labels"] == e["input_ids"] for e in blocks.train)
    assert f"{total % 16} tokens after the last full block dropped" in capsys.readouterr().err
    packed = build(recipe(shared_tokenizer_dir, train, stage="pt", max_length=64, packing=True), tok)
    assert sum(len(e["input_ids"]) for e in packed.train) == packed.report.tokens == total
    assert all(len(e["input_ids"]) <= 64 and "position_ids" in e for e in packed.train)
    assert packed.report.packing_efficiency == pytest.approx(total / (64 * len(packed.train)))
    assert "packing efficiency" in capsys.readouterr().err


def turns(*pairs: tuple[str, str], system: str | None = "You are terse.") -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    for user, reply in pairs:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


@only("qwen3")
def test_cut_drops_the_oldest_turns_first_and_keeps_the_system_message(shared_tokenizer_dir, tmp_path, capsys):
    tok = load(shared_tokenizer_dir)
    long_history = turns(
        ("First question " + "word " * 30, "First answer."), ("Second?", "Second answer."), ("Third?", "Third answer.")
    )
    train = write_jsonl(tmp_path / "train.jsonl", [long_history, chat("Hi", "Hello.")])
    bundle = build(recipe(shared_tokenizer_dir, train, max_length=60), tok)
    report = bundle.report
    assert (report.samples, report.truncated, report.truncated_history, report.dropped) == (2, 1, 1, 0)
    text = tok.decode(bundle.train[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are terse.")  # the system message stays
    assert "First" not in text and "Second answer." in text and "Third answer." in text  # only the oldest went
    assert len(bundle.train[0]["input_ids"]) <= 60
    trained = tok.decode([t for t in bundle.train[0]["labels"] if t != IGNORE_INDEX])
    assert "Second answer.<|im_end|>" in trained and "Third answer.<|im_end|>" in trained
    assert "1 truncated to max_length 60 (1 by dropping older turns), none dropped" in capsys.readouterr().err


@only("qwen3")
def test_cut_keeps_the_last_turn_and_cuts_its_end_when_it_alone_is_too_long(shared_tokenizer_dir, tmp_path):
    tok = load(shared_tokenizer_dir)
    record = turns(("Old question", "Old answer."), ("Count.", " ".join(str(k) for k in range(80))))
    train = write_jsonl(tmp_path / "train.jsonl", [record])
    bundle = build(recipe(shared_tokenizer_dir, train, max_length=40), tok)
    (example,) = bundle.train
    assert len(example["input_ids"]) == 40 and example["labels"][-1] != IGNORE_INDEX
    text = tok.decode(example["input_ids"])
    assert "Old" not in text and text.startswith("<|im_start|>system\nYou are terse.") and "Count." in text
    assert (bundle.report.truncated, bundle.report.truncated_history) == (1, 0)  # in the end, the end was cut


@only("qwen3")
def test_drop_policy_drops_and_counts_overlong_samples(shared_tokenizer_dir, tmp_path, capsys):
    long_reply = chat("Count.", " ".join(str(k) for k in range(60)))
    train = write_jsonl(tmp_path / "train.jsonl", [chat("Hi", "Hello."), long_reply, long_reply])
    bundle = build(recipe(shared_tokenizer_dir, train, max_length=32, truncation="drop"), load(shared_tokenizer_dir))
    assert (bundle.report.samples, bundle.report.truncated, bundle.report.dropped) == (1, 0, 2)
    assert bundle.report.reasons == {"longer than max_length 32 (truncation: drop)": 2}
    assert "none truncated, 2 dropped (2 longer than max_length 32 (truncation: drop))" in capsys.readouterr().err


BAD_LINES = [
    json.dumps(chat("Hi", "Hello.")),
    '{"messages": [oops',
    json.dumps({"messages": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "x"}]}),
    json.dumps(chat("Empty reply", "   ")),
    json.dumps(chat("Fine", "Yes.")),
    json.dumps({"messages": "not a list"}),
]


@only("qwen3")
def test_on_error_skip_counts_and_writes_rejects(shared_tokenizer_dir, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    r = recipe(shared_tokenizer_dir, train, on_error="skip").model_copy(update={"output": str(tmp_path / "run")})
    assert not build(r, load(shared_tokenizer_dir)).report.rejects_path  # no path given: nothing written
    assert not (tmp_path / "run").exists()
    bundle = build(r, load(shared_tokenizer_dir), rejects_path=tmp_path / "run" / "rejects.jsonl")
    report = bundle.report
    assert (report.samples, report.records, report.rejected) == (2, 2, 4)
    assert sum(report.rejected_reasons.values()) == 4 and report.rejected_reasons["malformed line"] == 1
    assert (tmp_path / "run" / "rejects.jsonl").read_bytes() == bundle.rejects
    rejects = [json.loads(line) for line in bundle.rejects.decode().splitlines()]
    assert [r["source"] for r in rejects] == [f"{train}:{n}" for n in (2, 3, 4, 6)]
    assert all(r["reason"] and r["category"] for r in rejects)
    assert rejects[2]["raw"] == chat("Empty reply", "   ")  # the row as it was read
    err = capsys.readouterr().err
    assert "skipped 4 bad records (data.on_error: skip)" in err and str(tmp_path / "run" / "rejects.jsonl") in err
    with pytest.raises(LmforgeError, match=r"4 bad records of 6.*\n.*train.jsonl:2: "):
        build(recipe(shared_tokenizer_dir, train), load(shared_tokenizer_dir))  # strict: all listed


BOOM_TEMPLATE = (
    "{% for m in messages %}{% if 'BOOM' in m['content'] %}{{ raise_exception('no BOOM here') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@only("qwen3")
def test_records_the_template_rejects_are_errors_or_rejects(shared_tokenizer_dir, tmp_path, capsys):
    template = tmp_path / "boom.jinja"
    template.write_text(BOOM_TEMPLATE, encoding="utf-8")
    train = write_jsonl(tmp_path / "train.jsonl", [chat("Hi", "Hello."), chat("BOOM", "x"), chat("A", "BOOM")])
    tok = load(shared_tokenizer_dir)
    with pytest.raises(LmforgeError, match=r"train data: 2 bad records of 3.*\n.*train.jsonl:2: .*no BOOM here"):
        build(recipe(shared_tokenizer_dir, train, template=str(template)), tok)
    skip = recipe(shared_tokenizer_dir, train, template=str(template), on_error="skip")
    bundle = build(skip, tok, rejects_path=tmp_path / "rejects.jsonl")
    assert (bundle.report.samples, bundle.report.rejected) == (1, 2)
    assert bundle.report.rejected_reasons == {"template cannot encode it": 2}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rejects] == [f"{train}:2", f"{train}:3"]
    assert rejects[0]["raw"]["messages"][0]["content"] == "BOOM"
