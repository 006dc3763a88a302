"""Reading JSON Lines in the workers gives what reading here and encoding after gives: the same examples, report,
rejects (in order, with file:line) and errors, in one process and in several, with many small ranges."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lmforge.config.recipe import Recipe
from lmforge.config.settings import DataSettings, data_settings
from lmforge.data.build import stream, workers
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError

from recipe_builds import build
from shared_assets import load, only

BOOM_TEMPLATE = (
    "{% for m in messages %}{% if 'BOOM' in m['content'] %}{{ raise_exception('no BOOM here') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch):
    """Many ranges and the pool even for these small files."""
    monkeypatch.setattr(stream, "MIN_RANGE_BYTES", 64)
    monkeypatch.setattr(stream, "MAX_RANGE_BYTES", 700)
    monkeypatch.setattr(workers, "PARALLEL_MIN_RECORDS", 8)


def chat(rng: random.Random, k: int) -> dict:
    messages = [{"role": "system", "content": "Be terse."}] if k % 3 == 0 else []
    for t in range(1 + k % 3):
        messages += [
            {"role": "user", "content": f"Q{k}.{t} " + "word " * rng.randint(0, 30)},
            {"role": "assistant", "content": f"A{k}.{t} " + "yes " * rng.randint(0, 30)},
        ]
    return {"messages": messages}


def chat_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [json.dumps(chat(rng, k), ensure_ascii=False) for k in range(n)]


def bad_lines() -> list[str]:
    """Rows every way wrong: blank, not JSON, a non-object, a missing field, an empty reply, a template error,
    a conversation with no assistant turn, a CRLF line."""
    return [
        "",
        "{not json",
        "[1, 2]",
        json.dumps({"messages": [{"role": "user"}]}),
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}),
        json.dumps({"messages": [{"role": "user", "content": "BOOM"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "alone"}]}),
        json.dumps({"messages": [{"role": "user", "content": "crlf"}, {"role": "assistant", "content": "ok"}]}) + "\r",
    ]


def mixed_file(path: Path, n: int, seed: int, bom: bool = False, last_newline: bool = True) -> Path:
    rng = random.Random(seed)
    lines = chat_lines(n, seed)
    for bad in bad_lines():
        lines.insert(rng.randrange(len(lines) + 1), bad)
    body = "\n".join(lines) + ("\n" if last_newline else "")
    data = body.encode("utf-8")
    k = data.index(b"\n", len(data) // 2)
    data = data[:k] + b'\n{"messages": "\xff"}' + data[k:]  # a non-UTF-8 line in the middle
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def recipe(tok_dir: Path, sources: list[dict], out: Path, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"path": str(tok_dir), "chat_template": data.pop("template", None)},
            "data": {"train": sources, "cache": False, "max_length": 96, "workers": 3, **data},
            "output": str(out),
        }
    )


def outcome(r: Recipe, tok, tmp_path: Path, streamed: bool, monkeypatch) -> tuple:
    """(examples, report, rejects file) or the error's message, built the streamed way or the other way."""
    with monkeypatch.context() as m:
        if not streamed:
            m.setattr(stream, "streamable", lambda *_: False)
        rejects = tmp_path / f"rejects-{streamed}.jsonl"
        try:
            bundle = build(r, tok, rejects_path=rejects)
        except LmforgeError as err:
            return (str(err),)
    report = {**vars(bundle.report), "rejects_path": None}  # each way its own file, compared by content
    return (
        list(bundle.train),
        bundle.eval and list(bundle.eval),
        report,
        rejects.read_text(encoding="utf-8") if rejects.exists() else None,
    )


def streamable(data: DataSettings) -> bool:
    return stream.streamable(resolve_sources(data.sources, data.registry, data.stage), data)


def assert_same(r: Recipe, tok, tmp_path: Path, monkeypatch, capsys) -> tuple:
    assert streamable(data_settings(r, None))
    other = outcome(r, tok, tmp_path, False, monkeypatch)
    got = outcome(r, tok, tmp_path, True, monkeypatch)
    assert "reading and encoding" in capsys.readouterr().err or len(got) == 1
    assert got == other
    return got


@only("qwen3")
def test_skip_gives_the_same_examples_rejects_and_report(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    template = tmp_path / "boom.jinja"
    template.write_text(BOOM_TEMPLATE, encoding="utf-8")
    a = mixed_file(tmp_path / "a.jsonl", 60, 1, bom=True)
    folder = tmp_path / "folder"
    folder.mkdir()
    mixed_file(folder / "b1.jsonl", 25, 2, last_newline=False)
    (folder / "b2.jsonl").write_text("", encoding="utf-8")  # an empty file among others
    mixed_file(folder / "b3.jsonl", 30, 3)
    tok = load(shared_tokenizer_dir)
    for template_path in (None, str(template)):
        r = recipe(
            shared_tokenizer_dir,
            [{"path": str(a)}, {"path": str(folder)}],
            tmp_path / "out",
            on_error="skip",
            template=template_path,
        )
        examples, _, report, rejects = assert_same(r, tok, tmp_path, monkeypatch, capsys)
        assert report["truncated"] > 0 and report["rejected"] >= 2 * len(bad_lines()) - 2
        assert f'{a}:1"' not in rejects and f"{folder / 'b1.jsonl'}:" in rejects


@only("qwen3")
def test_strict_errors_are_the_same(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    template = tmp_path / "boom.jinja"
    template.write_text(BOOM_TEMPLATE, encoding="utf-8")
    tok = load(shared_tokenizer_dir)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(chat_lines(40)) + "\n", encoding="utf-8")
    bad = mixed_file(tmp_path / "bad.jsonl", 40, 4)
    boom = tmp_path / "boom.jsonl"
    boom.write_text(
        "\n".join(chat_lines(40, 5)[:30] + [bad_lines()[5]] + chat_lines(40, 5)[30:]) + "\n", encoding="utf-8"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    cases = [([good, bad], None), ([boom, bad], str(template)), ([boom, good], str(template)), ([good, empty], None)]
    for paths, template_path in cases:
        r = recipe(shared_tokenizer_dir, [{"path": str(p)} for p in paths], tmp_path / "out", template=template_path)
        (message,) = assert_same(r, tok, tmp_path, monkeypatch, capsys)
        assert message.startswith(str(bad) if bad in paths else str(empty) if empty in paths else "")


@only("qwen3")
def test_format_told_by_a_later_record_and_a_fixed_format(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    tok = load(shared_tokenizer_dir)
    path = tmp_path / "late.jsonl"
    path.write_text("\n".join(['{"what": 1}', "", '{"who": 2}'] + chat_lines(30)) + "\n", encoding="utf-8")
    for extra in ({"on_error": "skip"}, {}):
        assert_same(
            recipe(shared_tokenizer_dir, [{"path": str(path)}], tmp_path / "out", **extra),
            tok,
            tmp_path,
            monkeypatch,
            capsys,
        )
    given = recipe(shared_tokenizer_dir, [{"path": str(path), "format": "messages"}], tmp_path / "out", on_error="skip")
    assert_same(given, tok, tmp_path, monkeypatch, capsys)
    wrong_kind = recipe(shared_tokenizer_dir, [{"path": str(path), "format": "text"}], tmp_path / "out")
    assert_same(wrong_kind, tok, tmp_path, monkeypatch, capsys)


@only("qwen3")
def test_eval_file_and_pretraining_text(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    tok = load(shared_tokenizer_dir)
    train = mixed_file(tmp_path / "train.jsonl", 50, 6)
    held_out = mixed_file(tmp_path / "eval.jsonl", 12, 7)
    r = recipe(
        shared_tokenizer_dir, [{"path": str(train)}], tmp_path / "out", on_error="skip", eval={"path": str(held_out)}
    )
    assert assert_same(r, tok, tmp_path, monkeypatch, capsys)[1]
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": "word " * k}) + "\n" for k in range(1, 80)), encoding="utf-8")
    pt = recipe(shared_tokenizer_dir, [{"path": str(texts)}], tmp_path / "out", max_length=32)
    assert_same(pt.model_copy(update={"stage": "pt"}), tok, tmp_path, monkeypatch, capsys)


def test_what_is_not_streamed(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x"}\n', encoding="utf-8")
    (tmp_path / "b.json").write_text('[{"text": "x"}]', encoding="utf-8")

    def data(sources: list[dict], **extra) -> DataSettings:
        r = Recipe.model_validate({"model": {"path": "m"}, "data": {"train": sources, **extra}, "output": "o"})
        return data_settings(r, None)

    assert streamable(data([{"path": str(jsonl)}], eval={"path": str(tmp_path / "b.json")}))
    assert not streamable(data([{"path": str(jsonl)}, {"path": str(tmp_path / "b.json")}]))
    assert not streamable(data([{"path": str(jsonl)}], eval={"fraction": 0.5}))
    assert not streamable(data([{"path": str(jsonl), "weight": 2}]))
    assert not streamable(data([{"path": str(tmp_path / "missing.jsonl")}]))


def preference_lines(n: int, seed: int, kto: bool) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        prompt = [{"role": "user", "content": f"Q{k} " + "word " * rng.randint(0, 40)}]
        if kto:
            rows.append({"prompt": prompt, "completion": f"A{k} " + "yes " * rng.randint(0, 20), "label": k % 2 == 0})
        else:
            rows.append({"prompt": prompt, "chosen": f"A{k} yes", "rejected": f"A{k} no " * rng.randint(1, 9)})
    lines = [json.dumps(r) for r in rows]
    lines.insert(n // 2, "{not json")
    lines.insert(
        n // 3,
        json.dumps(
            {"prompt": "same", "chosen": "x", "rejected": "x"}
            if not kto
            else {"prompt": "empty", "completion": "  ", "label": True}
        ),
    )
    return lines


@only("qwen3")
@pytest.mark.parametrize("stage", ["dpo", "kto"])
def test_preference_data_streams_the_same(shared_tokenizer_dir, tmp_path, monkeypatch, capsys, stage):
    """Pairs and KTO examples are read and encoded in the workers too, with the same result."""
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(preference_lines(70, 4, stage == "kto")) + "\n", encoding="utf-8")
    tok = load(shared_tokenizer_dir)
    r = recipe(shared_tokenizer_dir, [{"path": str(path)}], tmp_path / "out", on_error="skip", max_length=48)
    examples, _, report, rejects = assert_same(
        r.model_copy(update={"stage": stage}), tok, tmp_path, monkeypatch, capsys
    )
    assert report["samples"] == len(examples) and report["samples"] + report["rejected"] == 72  # every line counted
    reasons = report["rejected_reasons"]
    assert reasons["malformed line"] == 1 and reasons["no room for the answers"] > 0 and report["truncated"] > 0
    assert reasons["empty assistant content" if stage == "kto" else "chosen equals rejected"] == 1
    assert rejects.count(f"{path}:") == report["rejected"]


@only("qwen3")
def test_screening_in_the_workers_counts_the_same(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    """Over-long text is cut and special-token strings counted where the records are read: the same counts, the
    first one's place included, whichever process read it."""
    lines = chat_lines(60, 8)
    for k, text in ((5, "word " * 800), (40, "say <|im_end|> now"), (47, "<|im_start|>user"), (52, "word " * 900)):
        lines[k] = json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]})
    path = tmp_path / "typed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = load(shared_tokenizer_dir)
    r = recipe(shared_tokenizer_dir, [{"path": str(path)}], tmp_path / "out", max_length=32)
    report = assert_same(r, tok, tmp_path, monkeypatch, capsys)[2]
    assert report["cut_records"] == 2 and report["special_records"] == 2
    assert report["special_strings"] == {"<|im_end|>": 1, "<|im_start|>": 1}
    assert report["special_at"] == f"{path}:41"


@only("qwen3")
def test_keys_left_out_are_counted_and_said_when_streamed(shared_tokenizer_dir, tmp_path, monkeypatch, capsys):
    """Keys the format does not read are said with their counts whichever way the data is read."""
    lines = [
        json.dumps({**json.loads(line), "id": k, **({"url": "u"} if k % 3 == 0 else {})})
        for k, line in enumerate(chat_lines(30, 9))
    ]
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = load(shared_tokenizer_dir)
    r = recipe(shared_tokenizer_dir, [{"path": str(path)}], tmp_path / "out")
    for streamed in (False, True):
        outcome(r, tok, tmp_path, streamed, monkeypatch)
        err = capsys.readouterr().err
        assert "not read, so not trained on: id (30 records), url (10 records)" in err, (streamed, err)
