"""A LLaMA-Factory data folder read through its dataset_info.json as it is: one entry in each of the shapes
LLaMA-Factory's own data/dataset_info.json uses (alpaca, sharegpt with tags and tools, ranking pairs, kto_tag,
pretraining text in .txt and .jsonl, a file_name directory, hub entries), with small data files of our own in the
same formats. Each entry lmforge can express reads; each it cannot is refused with the reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lmforge.config.settings import Source
from lmforge.data.records import Conversation, KTOExample, Message, PreferencePair, Text, ToolCall
from lmforge.data.sources.read import read_source
from lmforge.data.sources.registry import resolve_sources
from lmforge.errors import LmforgeError

ROLE_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
CALENDAR_TOOL = {"name": "next_holiday", "description": "The next public holiday", "parameters": {"type": "object"}}

DATASET_INFO = {
    "greetings": {"file_name": "greetings.json"},
    "qa_custom": {
        "file_name": "qa_custom.jsonl",
        "columns": {"prompt": "question", "query": "context", "response": "answer", "system": "sys", "history": "past"},
    },
    "tool_chats": {
        "file_name": "tool_chats.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
    "react_chats": {"file_name": "react_chats.json", "formatting": "sharegpt"},
    "role_chats": {
        "file_name": "role_chats.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {**ROLE_TAGS, "system_tag": "system"},
    },
    "pairs_sharegpt": {
        "file_name": "pairs_sharegpt.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "pairs_alpaca": {
        "file_name": "pairs_alpaca.json",
        "ranking": True,
        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
    },
    "feedback": {
        "file_name": "feedback.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": ROLE_TAGS,
    },
    "feedback_alpaca": {
        "file_name": "feedback_alpaca.jsonl",
        "columns": {"prompt": "prompt", "response": "completion", "kto_tag": "label"},
    },
    "corpus_txt": {"file_name": "corpus.txt", "columns": {"prompt": "text"}},
    "corpus_jsonl": {"file_name": "web.jsonl", "columns": {"prompt": "text"}},
    "parts_dir": {"file_name": "parts"},
    "sampled": {"file_name": "greetings.json", "num_samples": 3},
    "hub_alpaca": {"hf_hub_url": "org/alpaca-like", "ms_hub_url": "ms-org/alpaca-like", "om_hub_url": "om/alpaca"},
    "hub_chat": {
        "hf_hub_url": "org/chat-200k",
        "ms_hub_url": "ms-org/chat-200k",
        "split": "train_sft",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": ROLE_TAGS,
    },
    "hub_pairs": {"hf_hub_url": "org/pairs", "subset": "en", "ranking": True, "columns": {"prompt": "question"}},
    "hub_web": {"hf_hub_url": "org/web", "columns": {"prompt": "raw_content"}, "subset": "default"},
    # what lmforge cannot express
    "pictures": {
        "file_name": "pictures.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": ROLE_TAGS,
    },
    "hub_vision_pairs": {
        "hf_hub_url": "org/vision-pairs",
        "ranking": True,
        "columns": {"prompt": "question", "chosen": "chosen", "rejected": "rejected", "images": "image"},
    },
    "hub_code_folder": {"hf_hub_url": "org/code", "columns": {"prompt": "content"}, "folder": "python"},
    "modelscope_only": {"ms_hub_url": "ms-org/only-here"},
    "scripted": {"script_url": "loaders/custom"},
    "in_the_cloud": {"cloud_file_name": "s3://bucket/chats.json"},
    "openai_style": {"file_name": "role_chats.jsonl", "formatting": "openai", "columns": {"messages": "messages"}},
}

FILES = {
    "greetings.json": [
        {"instruction": "hi", "input": "", "output": "Hello! How can I help?"},
        {"instruction": "Name a colour.", "input": "Only warm ones.", "output": "Orange."},
    ],
    "qa_custom.jsonl": [
        {
            "question": "And in Rome?",
            "context": "Answer with a word.",
            "answer": "Sunny.",
            "sys": "You know the weather.",
            "past": [["Weather in Oslo?", "Rainy."]],
        }
    ],
    "tool_chats.json": [
        {
            "conversations": [
                {"from": "human", "value": "When is the next holiday?"},
                {"from": "function_call", "value": json.dumps({"name": "next_holiday", "arguments": {}})},
                {"from": "observation", "value": '{"date": "May 1"}'},
                {"from": "gpt", "value": "On May 1."},
            ],
            "tools": json.dumps([CALENDAR_TOOL]),
        }
    ],
    "react_chats.json": [
        {
            "conversations": [
                {"from": "human", "value": "How many days to May 1?"},
                {"from": "gpt", "value": "Action: days_until[May 1]"},
                {"from": "observation", "value": "12"},
                {"from": "gpt", "value": "Twelve days."},
            ]
        }
    ],
    "role_chats.jsonl": [
        {
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Thank you"},
                {"role": "assistant", "content": "Merci"},
            ]
        }
    ],
    "pairs_sharegpt.json": [
        {
            "conversations": [{"from": "human", "value": "Is 7 prime?"}],
            "chosen": {"from": "gpt", "value": "Yes."},
            "rejected": {"from": "gpt", "value": "No, 7 = 2 x 3."},
        }
    ],
    "pairs_alpaca.json": [{"instruction": "Spell 12.", "input": "In French.", "chosen": "douze", "rejected": "deuze"}],
    "feedback.json": [
        {
            "messages": [{"role": "user", "content": "Capital of Peru?"}, {"role": "assistant", "content": "Lima."}],
            "label": True,
        },
        {
            "messages": [{"role": "user", "content": "Capital of Chile?"}, {"role": "assistant", "content": "Lima."}],
            "label": False,
        },
    ],
    "feedback_alpaca.jsonl": [{"prompt": "2 + 2?", "completion": "5", "label": False}],
    "web.jsonl": [
        {"text": "A page about kettles.", "url": "https://example.org/kettles", "timestamp": "2019-04-25"},
        {"text": "A page about teapots.", "url": "https://example.org/teapots", "timestamp": "2019-04-26"},
    ],
    "parts/a.jsonl": [{"instruction": "First part?", "output": "Yes."}],
    "parts/b.jsonl": [{"instruction": "Second part?", "output": "Also yes."}],
    "pictures.json": [
        {
            "messages": [
                {"role": "user", "content": "<image>Who is this?"},
                {"role": "assistant", "content": "A cat."},
            ],
            "images": ["pictures/1.jpg"],
        }
    ],
}
CORPUS = "The first document, one line long.\n\nThe second document.\n"

U, A = "user", "assistant"
READABLE = [  # (entry, stage, how many records, the first record)
    ("greetings", "sft", 2, Conversation([Message(U, "hi"), Message(A, "Hello! How can I help?")])),
    (
        "qa_custom",
        "sft",
        1,
        Conversation(
            [
                Message("system", "You know the weather."),
                Message(U, "Weather in Oslo?"),
                Message(A, "Rainy."),
                Message(U, "And in Rome?\nAnswer with a word."),
                Message(A, "Sunny."),
            ]
        ),
    ),
    (
        "tool_chats",
        "sft",
        1,
        Conversation(
            [
                Message(U, "When is the next holiday?"),
                Message(A, "", tool_calls=[ToolCall("next_holiday", {})]),
                Message("tool", '{"date": "May 1"}'),
                Message(A, "On May 1."),
            ],
            tools=[{"type": "function", "function": CALENDAR_TOOL}],
        ),
    ),
    (
        "react_chats",
        "sft",
        1,
        Conversation(
            [
                Message(U, "How many days to May 1?"),
                Message(A, "Action: days_until[May 1]"),
                Message("tool", "12"),
                Message(A, "Twelve days."),
            ]
        ),
    ),
    (
        "role_chats",
        "sft",
        1,
        Conversation([Message("system", "Answer in French."), Message(U, "Thank you"), Message(A, "Merci")]),
    ),
    (
        "pairs_sharegpt",
        "dpo",
        1,
        PreferencePair([Message(U, "Is 7 prime?")], Message(A, "Yes."), Message(A, "No, 7 = 2 x 3.")),
    ),
    (
        "pairs_alpaca",
        "rm",
        1,
        PreferencePair([Message(U, "Spell 12.\nIn French.")], Message(A, "douze"), Message(A, "deuze")),
    ),
    ("feedback", "kto", 2, KTOExample([Message(U, "Capital of Peru?")], Message(A, "Lima."), True)),
    ("feedback_alpaca", "kto", 1, KTOExample([Message(U, "2 + 2?")], Message(A, "5"), False)),
    ("corpus_txt", "pt", 2, Text("The first document, one line long.")),
    ("corpus_jsonl", "pt", 2, Text("A page about kettles.")),
    ("parts_dir", "sft", 2, Conversation([Message(U, "First part?"), Message(A, "Yes.")])),
    ("greetings", "pt", 2, Text("hi\nHello! How can I help?")),
]


@pytest.fixture
def lf_data(tmp_path) -> Path:
    folder = tmp_path / "data"
    for name, rows in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(rows) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows)
        path.write_text(text, encoding="utf-8")
    (folder / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2), encoding="utf-8")
    return folder


def named(folder: Path, name: str, stage: str) -> Source:
    [source] = resolve_sources((Source(name=name),), str(folder), stage)
    return source


@pytest.mark.parametrize("name, stage, count, first", READABLE, ids=[f"{r[0]}-{r[1]}" for r in READABLE])
def test_every_entry_lmforge_can_express_reads_through_dataset_info_unchanged(lf_data, name, stage, count, first):
    records = read_source(named(lf_data, name, stage), stage).records
    assert len(records) == count
    records[0].source = ""
    assert records[0] == first


def test_what_a_read_leaves_out_is_said(lf_data, capsys):
    got = read_source(named(lf_data, "corpus_jsonl", "pt"), "pt")
    assert got.unread == Counter({"url": 2, "timestamp": 2})
    read_source(named(lf_data, "corpus_txt", "pt"), "pt")
    err = capsys.readouterr().err
    assert "not read, so not trained on: url (2 records), timestamp (2 records)" in err
    assert f"{lf_data / 'corpus.txt'}: 1 blank line skipped (one document a line)" in err


def test_num_samples_becomes_an_exact_sample_count(lf_data):
    assert named(lf_data, "sampled", "sft").samples == 3


def test_hub_entries_name_the_hub_dataset_and_read_rows_with_the_entry_columns_and_tags(lf_data, monkeypatch):
    import datasets

    assert named(lf_data, "hub_alpaca", "sft") == Source(hub="org/alpaca-like", format="alpaca")
    chat = named(lf_data, "hub_chat", "sft")
    assert (chat.hub, chat.split, chat.format, chat.columns, chat.tags) == (
        "org/chat-200k",
        "train_sft",
        "sharegpt",
        {"conversations": "messages"},
        ROLE_TAGS,
    )
    pairs, web = named(lf_data, "hub_pairs", "orpo"), named(lf_data, "hub_web", "pt")
    assert (pairs.subset, pairs.columns, web.subset, web.columns) == (
        "en",
        {"instruction": "question"},
        "default",
        {"instruction": "raw_content"},
    )
    rows = [
        {
            "prompt": "Hi",
            "prompt_id": "p1",
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
        }
    ]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, subset, split, streaming: rows)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reachability check of the Hub (test_hub.py)
    got = read_source(chat, "sft")
    assert got.records[0].messages == [Message(U, "Hi"), Message(A, "Hey")]
    assert got.unread == Counter({"prompt": 1, "prompt_id": 1})


@pytest.mark.parametrize(
    "name, stage, reason",
    [
        ("pictures", "sft", "multimodal columns (images) are not supported; lmforge trains on text only"),
        ("hub_vision_pairs", "dpo", "multimodal columns (images) are not supported"),
        ("hub_code_folder", "pt", "folder (a hub folder) is not supported; download the dataset and use file_name"),
        ("modelscope_only", "sft", "ModelScope hub datasets are not supported; add an hf_hub_url"),
        ("scripted", "sft", "loading scripts (load_from: script) are not supported"),
        ("in_the_cloud", "sft", "cloud files are not supported; download the file and use file_name"),
        ("openai_style", "sft", "also appends 'detailed thinking off' to system prompts"),
        ("pairs_sharegpt", "sft", "ranking: true marks preference pairs, which stage sft does not train on"),
        ("pairs_alpaca", "kto", "ranking: true marks preference pairs, which stage kto does not train on"),
        ("greetings", "dpo", "stage dpo trains on preference pairs, and the entry has no ranking: true"),
        ("feedback", "sft", "columns.kto_tag labels each example desirable or not, which stage sft does not read"),
        ("tool_chats", "pt", "a sharegpt dataset cannot be used for pre-training (stage pt)"),
    ],
)
def test_every_entry_lmforge_cannot_express_is_refused_with_the_reason(lf_data, name, stage, reason):
    with pytest.raises(LmforgeError) as err:
        named(lf_data, name, stage)
    assert f"dataset {name!r}: " in str(err.value) and reason in str(err.value)


def test_the_media_file_read_directly_is_refused_too(lf_data):
    source = Source(path=str(lf_data / "pictures.json"), format="sharegpt", columns={"conversations": "messages"})
    with pytest.raises(LmforgeError, match='the record has "images": media inputs, which lmforge cannot read'):
        read_source(source, "sft")
