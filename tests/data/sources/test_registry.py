from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmforge.config.recipe import DataSpec
from lmforge.config.settings import Source, source_settings
from lmforge.data.sources.read import read_source
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError

LF_INFO = {
    "alpaca_en": {"file_name": "alpaca_en.json"},
    "alpaca_custom": {
        "file_name": "sub/qa.jsonl",
        "columns": {"prompt": "question", "query": "context", "response": "answer", "system": "sys", "history": "past"},
    },
    "glaive_toolcall": {
        "file_name": "glaive.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
    "openai_style": {
        "file_name": "oa.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    },
    "dpo_en": {
        "file_name": "dpo_en.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "kto_en": {
        "file_name": "kto.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {"role_tag": "role"},
    },
    "hub_data": {
        "hf_hub_url": "org/data",
        "ms_hub_url": "ms/data",
        "subset": "en",
        "split": "validation",
        "formatting": "alpaca",
        "num_samples": 100,
        "file_sha1": "abc",
    },
    "wiki_demo": {"file_name": "wiki.txt", "columns": {"prompt": "text"}},
    "broken_elsewhere": {"script_url": "scripts/x"},
}


def write_registry(folder: Path, entries: dict, name: str = "dataset_info.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = json.dumps(entries) if name.endswith(".json") else yaml.safe_dump(entries)
    path.write_text(text, encoding="utf-8")
    return path


def spec(registry: Path | str | None, *train: dict) -> DataSpec:
    return DataSpec(train=list(train), registry=None if registry is None else str(registry))


def resolve(registry, *train: dict, stage: str | None = None) -> list[Source]:
    data = spec(registry, *train)  # the recipe's validation, then the settings the data layer takes
    return resolve_sources(tuple(source_settings(s) for s in data.train), data.registry, stage=stage)


def error_of(registry, *train: dict, stage: str | None = None) -> str:
    with pytest.raises(LmforgeError) as err:
        resolve(registry, *train, stage=stage)
    return str(err.value)


@pytest.fixture
def lf_dir(tmp_path) -> Path:
    write_registry(tmp_path / "data", LF_INFO)
    return tmp_path / "data"


def test_sources_without_names_pass_through(tmp_path):
    out = resolve(None, {"path": "a.jsonl", "weight": 2}, {"hub": "org/x", "split": "test"})
    assert out == [Source(path="a.jsonl", weight=2), Source(hub="org/x", split="test")]


def test_llamafactory_alpaca_entry_from_the_directory(lf_dir):
    [src] = resolve(lf_dir, {"name": "alpaca_en"})
    assert src == Source(path=str(lf_dir / "alpaca_en.json"), format="alpaca")


def test_registry_may_be_the_json_file_itself(lf_dir):
    [src] = resolve(lf_dir / "dataset_info.json", {"name": "alpaca_custom"})
    assert src.path == str(lf_dir / "sub" / "qa.jsonl")
    assert src.columns == {
        "instruction": "question",
        "input": "context",
        "output": "answer",
        "system": "sys",
        "history": "past",
    }


def test_llamafactory_sharegpt_columns_and_tags(lf_dir):
    tool, oa = resolve(lf_dir, {"name": "glaive_toolcall"}, {"name": "openai_style"})
    assert (tool.format, tool.columns, tool.tags) == (
        "sharegpt",
        {"conversations": "conversations", "tools": "tools"},
        {},
    )
    assert oa.columns == {"conversations": "messages"}
    assert oa.tags == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }


def test_ranking_and_kto_keep_the_format_and_map_columns(lf_dir):
    dpo, kto = resolve(lf_dir, {"name": "dpo_en"}, {"name": "kto_en"})
    assert dpo.format == "sharegpt"
    assert dpo.columns == {"conversations": "conversations", "chosen": "chosen", "rejected": "rejected"}
    assert kto.columns == {"conversations": "messages", "label": "label"} and kto.tags == {"role_tag": "role"}


def test_hub_entry_prefers_hf_and_maps_subset_split_num_samples(lf_dir):
    [src] = resolve(lf_dir, {"name": "hub_data"})
    assert src == Source(hub="org/data", subset="en", split="validation", format="alpaca", samples=100)


def test_pretraining_reads_alpaca_entries_as_documents_and_refuses_sharegpt(lf_dir):
    wiki, custom = resolve(lf_dir, {"name": "wiki_demo"}, {"name": "alpaca_custom"}, stage="pt")
    assert (wiki.format, wiki.columns) == ("alpaca", {"instruction": "text"})
    assert (custom.format, custom.columns["input"], custom.columns["output"]) == ("alpaca", "context", "answer")
    (lf_dir / "sub").mkdir()
    rows = [{"question": "Q", "context": "C", "answer": "A"}, {"question": "Q2", "context": "", "answer": "A2"}]
    (lf_dir / "sub" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [t.text for t in read_source(custom, "pt").records] == ["Q\nC\nA", "Q2\nA2"]  # nothing left out
    assert "LLaMA-Factory would train on its first user message alone" in error_of(
        lf_dir, {"name": "glaive_toolcall"}, stage="pt"
    )


def test_recipe_settings_win_over_the_registry(lf_dir):
    [src] = resolve(
        lf_dir,
        {"name": "alpaca_custom", "weight": 0.5, "format": "alpaca", "columns": {"output": "reply", "label": "ok"}},
    )
    assert src.weight == 0.5 and src.samples is None
    assert src.columns["output"] == "reply" and src.columns["instruction"] == "question"
    assert src.columns["label"] == "ok"
    [hub] = resolve(lf_dir, {"name": "hub_data", "ratio": 0.3, "split": "train"})
    assert (hub.ratio, hub.samples, hub.split, hub.subset) == (0.3, None, "train", "en")
    [kept] = resolve(lf_dir, {"name": "hub_data", "tags": {"user_tag": "u"}})
    assert kept.samples == 100 and kept.split == "validation"


def test_unknown_name_suggests_close_names_and_names_the_registry(lf_dir):
    msg = error_of(lf_dir, {"path": "x.jsonl"}, {"name": "alpaca_enn"})
    assert "data.train[1]" in msg and "'alpaca_enn'" in msg and "did you mean 'alpaca_en'" in msg
    assert str(lf_dir / "dataset_info.json") in msg


def test_missing_registry_settings_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "data.train[0] (name: a): a named dataset needs data.registry" in error_of(None, {"name": "a"})
    write_registry(tmp_path / "data", {"a": {"file_name": "a.json"}})
    assert "`registry: data` may be what you want" in error_of(None, {"name": "a"})
    assert "does not exist" in error_of(tmp_path / "nope.yaml", {"name": "a"})
    (tmp_path / "empty").mkdir()
    assert "holds no dataset_info.json" in error_of(tmp_path / "empty", {"name": "a"})


def test_broken_entries_not_named_do_not_matter_but_named_ones_fail(lf_dir):
    assert resolve(lf_dir, {"name": "alpaca_en"})
    assert "loading scripts (load_from: script) are not supported" in error_of(lf_dir, {"name": "broken_elsewhere"})


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"file_name": "a.json", "formatting": "openai"}, "formatting 'openai' is not supported"),
        ({"ms_hub_url": "ms/x"}, "ModelScope hub datasets are not supported"),
        ({"om_hub_url": "om/x"}, "Modelers hub"),
        ({"cloud_file_name": "s3://b/x.json"}, "cloud files are not supported"),
        ({"hf_hub_url": "org/x", "folder": "en"}, "folder (a hub folder) is not supported"),
        ({"hf_hub_url": "org/x", "revision": "abc"}, "revision (a pinned revision) is not supported"),
        ({"file_name": "a.json", "columns": {"prompt": "q", "images": "imgs"}}, "multimodal columns (images)"),
        ({"file_name": "a.json", "columns": {"promt": "q"}}, "unknown column 'promt' (did you mean 'prompt'?)"),
        (
            {"file_name": "a.json", "columns": {"messages": "m"}},
            "columns (formatting alpaca): unknown column 'messages'",
        ),
        ({"file_name": "a.json", "tags": {"role_tag": "role"}}, "tags only apply to formatting sharegpt"),
        ({"file_name": "a.json", "formatting": "sharegpt", "tags": {"rol_tag": "r"}}, "unknown tag 'rol_tag'"),
        ({"file_name": "a.json", "formating": "sharegpt"}, "unknown key 'formating' (did you mean 'formatting'?)"),
        ({"file_name": "a.json", "ranking": "yes"}, "ranking must be true or false"),
        ({"formatting": "alpaca"}, "no file_name or hf_hub_url"),
        ({"file_name": "a.json", "num_samples": 0}, "samples"),
    ],
)
def test_unsupported_llamafactory_features_are_clear_errors(tmp_path, entry, expected):
    registry = write_registry(tmp_path, {"d": entry})
    msg = error_of(registry, {"name": "d"})
    assert expected in msg and f"{registry}: dataset 'd'" in msg


def test_lmforge_yaml_registry_with_relative_paths(tmp_path):
    registry = write_registry(
        tmp_path / "reg",
        {
            "chat": {"path": "chat/*.jsonl", "format": "messages"},
            "abs": {"path": str(tmp_path / "x.parquet")},
            "qa": {"hub": "org/qa", "subset": "v2", "format": "alpaca", "columns": {"instruction": "q"}, "samples": 9},
        },
        name="datasets.yaml",
    )
    chat, absolute, qa = resolve(registry, {"name": "chat"}, {"name": "abs"}, {"name": "qa", "weight": 2})
    assert chat == Source(path=str(tmp_path / "reg" / "chat" / "*.jsonl"), format="messages")
    assert absolute.path == str(tmp_path / "x.parquet")
    assert qa == Source(hub="org/qa", subset="v2", format="alpaca", columns={"instruction": "q"}, weight=2)


def test_lmforge_json_registry_and_mixed_llamafactory_entries(tmp_path):
    registry = write_registry(
        tmp_path, {"ours": {"path": "a.jsonl"}, "theirs": {"file_name": "b.json"}}, name="registry.json"
    )
    ours, theirs = resolve(registry, {"name": "ours"}, {"name": "theirs"})
    assert ours == Source(path=str(tmp_path / "a.jsonl"))
    assert theirs == Source(path=str(tmp_path / "b.json"), format="alpaca")


def test_lmforge_registry_entry_errors(tmp_path):
    registry = write_registry(
        tmp_path,
        {
            "bad": {"path": "a.jsonl", "fromat": "alpaca"},
            "loop": {"name": "bad"},
            "both": {"path": "a", "hub": "b"},
            "scalar": "a.jsonl",
        },
        name="reg.yaml",
    )
    assert f"{registry}: dataset 'bad': invalid entry" in error_of(registry, {"name": "bad"})
    assert "fromat" in error_of(registry, {"name": "bad"})
    assert "cannot name another dataset" in error_of(registry, {"name": "loop"})
    assert "exactly one of `path`" in error_of(registry, {"name": "both"})
    assert "an entry is a mapping" in error_of(registry, {"name": "scalar"})


def test_unreadable_registry_files(tmp_path):
    bad_json = tmp_path / "dataset_info.json"
    bad_json.write_text('{\n  "a": {"file_name": "x.json",}\n}', encoding="utf-8")
    assert f"{bad_json}:2: not valid JSON" in error_of(bad_json, {"name": "a"})
    listing = tmp_path / "reg.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    assert "a mapping of dataset name -> settings, got list" in error_of(listing, {"name": "a"})
