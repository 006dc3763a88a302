"""Preference pairs and KTO examples: same template and masks as SFT, truncation, bad pairs counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.config.recipe import Recipe
from lmforge.data.build.encode import EncodeSettings, Sample, encode_samples
from lmforge.data.build.pairs import BadPair, prompt_length
from lmforge.data.chat.masks import LAST_REPLY, encode
from lmforge.data.chat.templates import resolve_chat_template
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import KTOExample, Message, PreferencePair
from lmforge.errors import LmforgeError

from recipe_builds import build

PROMPT = [
    Message("system", "You are a calculator."),
    Message("user", "What is 2 plus 3?"),
    Message("assistant", "2 plus 3 is 5."),
    Message("user", "And 7 times 6?"),
]


def _template(tokenizer) -> str:
    return resolve_chat_template(tokenizer, None if tokenizer.chat_template else "llama2")


def encode_one(
    tokenizer, template: str, record: PreferencePair | KTOExample, max_length: int, truncation: str = "cut"
) -> Sample:
    """The record's sample as the pipeline's encoder builds it; its error raised."""
    kind = "kto" if isinstance(record, KTOExample) else "preference"
    (outcome,) = encode_samples(tokenizer, [record], EncodeSettings(kind, template, max_length, truncation=truncation))
    if isinstance(outcome, LmforgeError):
        raise outcome
    (sample,) = outcome
    return sample


def _labelled(ids: list[int], labels: list[int]) -> list[int]:
    return [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]


def test_pair_sides_share_the_prompt_and_are_masked_like_sft(shared_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(shared_tokenizer_dir)
    template = _template(tokenizer)
    pair = PreferencePair(
        PROMPT,
        Message("assistant", "7 times 6 is 42."),
        Message("assistant", "7 times 6 is 41."),
        source="pairs.jsonl:1",
    )
    chosen, rejected = encode_one(tokenizer, template, pair, 512).sides
    n = prompt_length(chosen)
    assert n == prompt_length(rejected) and chosen.input_ids[:n] == rejected.input_ids[:n]
    for side, reply in ((chosen, pair.chosen), (rejected, pair.rejected)):
        (sft,) = encode(tokenizer, template, pair.conversation("chosen" if side is chosen else "rejected"), LAST_REPLY)
        assert (side.input_ids, side.labels) == (sft.input_ids, sft.labels)
        assert all(label == IGNORE_INDEX for label in side.labels[:n])
        text = tokenizer.decode(_labelled(side.input_ids, side.labels))
        before, found, after = text.partition(reply.content)
        lead = re.sub(r"</?think>|<\|channel\|>final|<\|message\|>", "", before)  # Qwen3's empty think; harmony
        assert found and not lead.strip()
        assert after.strip()  # the end-of-turn token(s) are labelled too
        assert "2 plus 3" not in text  # the earlier assistant turn is prompt


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def test_labels_are_the_reply_and_end_of_turn(tiny_tokenizer):
    pair = PreferencePair(PROMPT[1:2], Message("assistant", "2 plus 3 is 5."), Message("assistant", "2 plus 3 is 6."))
    chosen, rejected = encode_one(tiny_tokenizer, tiny_tokenizer.chat_template, pair, 128).sides
    assert tiny_tokenizer.decode(_labelled(chosen.input_ids, chosen.labels)) == "2 plus 3 is 5.<|im_end|>"
    assert tiny_tokenizer.decode(_labelled(rejected.input_ids, rejected.labels)) == "2 plus 3 is 6.<|im_end|>"


def test_bad_pairs_are_named(tiny_tokenizer):
    template = tiny_tokenizer.chat_template
    same = PreferencePair(PROMPT[1:2], Message("assistant", "5."), Message("assistant", " 5. "), source="f:3")
    with pytest.raises(BadPair, match="f:3: the chosen and rejected replies are the same") as err:
        encode_one(tiny_tokenizer, template, same, 128)
    assert err.value.category == "chosen equals rejected"
    empty = PreferencePair(PROMPT[1:2], Message("assistant", "5."), Message("assistant", " "), source="f:4")
    with pytest.raises(BadPair, match="rejected reply is empty"):
        encode_one(tiny_tokenizer, template, empty, 128)
    long_prompt = [Message("user", "word " * 200)]
    no_room = PreferencePair(long_prompt, Message("assistant", "5."), Message("assistant", "6."), source="f:5")
    with pytest.raises(BadPair, match="no room for the answers") as err:
        encode_one(tiny_tokenizer, template, no_room, 64)
    assert err.value.category == "no room for the answers"


def test_truncation_drops_the_oldest_turns_first(tiny_tokenizer):
    template = tiny_tokenizer.chat_template
    history = [Message("user", "What is 9 times 9? " * 6), Message("assistant", "9 times 9 is 81. " * 6)]
    pair = PreferencePair(
        [*history, Message("user", "And 2 plus 2?")],
        Message("assistant", "2 plus 2 is 4."),
        Message("assistant", "2 plus 2 is 5."),
    )
    full = encode_one(tiny_tokenizer, template, pair, 1024)
    assert full.cut is None
    short = encode_one(tiny_tokenizer, template, pair, 40)
    assert short.cut == "history"
    assert all(len(s.input_ids) <= 40 for s in short.sides) and "9 times 9" not in short.sides[0].text
    assert encode_one(tiny_tokenizer, template, pair, 40, truncation="drop").dropped


def test_kto_example_is_labelled_on_the_completion(tiny_tokenizer):
    example = KTOExample(PROMPT[1:2], Message("assistant", "2 plus 3 is 5."), label=True)
    (enc,) = encode_one(tiny_tokenizer, tiny_tokenizer.chat_template, example, 128).sides
    assert tiny_tokenizer.decode(_labelled(enc.input_ids, enc.labels)) == "2 plus 3 is 5.<|im_end|>"


def _write_pairs(path: Path, bad: bool) -> Path:
    rows = [
        {"prompt": f"What is {i} plus 1?", "chosen": f"{i} plus 1 is {i + 1}.", "rejected": f"{i} plus 1 is {i + 2}."}
        for i in range(6)
    ]
    if bad:
        rows[2]["rejected"] = rows[2]["chosen"]
        rows[4]["prompt"] = "word " * 300
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path: Path, data: Path, tokenizer_dir: Path, **data_keys) -> Recipe:
    return Recipe(
        stage="dpo",
        model={"path": str(tokenizer_dir)},
        output=str(tmp_path / "out"),
        data={"train": [{"path": str(data)}], "max_length": 64, **data_keys},
    )


def test_bad_pairs_stop_a_strict_run_with_where_they_are(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    recipe = _recipe(tmp_path, _write_pairs(tmp_path / "p.jsonl", bad=True), tiny_tokenizer_dir)
    with pytest.raises(LmforgeError, match=r"2 bad records of 6(.|\n)*p.jsonl:3(.|\n)*p.jsonl:5"):
        build(recipe, tiny_tokenizer)


def test_bad_pairs_are_counted_and_written_when_skipped(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    recipe = _recipe(
        tmp_path,
        _write_pairs(tmp_path / "p.jsonl", bad=True),
        tiny_tokenizer_dir,
        on_error="skip",
        eval={"fraction": 0.25},
    )
    bundle = build(recipe, tiny_tokenizer)
    report = bundle.report
    assert report.rejected == 2
    assert report.rejected_reasons == {"chosen equals rejected": 1, "no room for the answers": 1}
    rejects = [json.loads(line) for line in bundle.rejects.decode().splitlines()]
    assert {r["source"].rsplit(":", 1)[1] for r in rejects} == {"3", "5"}
    assert len(bundle.train) + len(bundle.eval) == 4
    assert set(bundle.train[0]) == {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}


def test_kto_examples_get_mismatched_pairs(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    rows = [
        {"prompt": f"What is {i} plus 1?", "completion": f"{i} plus 1 is {i + 1 + i % 2}.", "label": i % 2 == 0}
        for i in range(4)
    ]
    data = tmp_path / "k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _recipe(tmp_path, data, tiny_tokenizer_dir).model_copy(update={"stage": "kto"})
    train = build(recipe, tiny_tokenizer).train
    assert [ex["desirable"] for ex in train] == [1, 0, 1, 0]
    first, last = train[0], train[-1]
    n = first["prompt_length"]
    assert first["kl_input_ids"][:n] == first["input_ids"][:n]
    assert first["kl_input_ids"][n:] == last["input_ids"][last["prompt_length"] :]  # the one before, wrapping
    assert _labelled(first["kl_input_ids"], first["kl_labels"]) == _labelled(last["input_ids"], last["labels"])


def test_an_empty_side_is_a_bad_record_like_the_others(tmp_path, tiny_tokenizer, tiny_tokenizer_dir):
    data = _write_pairs(tmp_path / "p.jsonl", bad=False)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[1]["rejected"] = "   "
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LmforgeError, match=r'p.jsonl:2: "rejected" is empty'):
        build(_recipe(tmp_path, data, tiny_tokenizer_dir), tiny_tokenizer)
    bundle = build(_recipe(tmp_path, data, tiny_tokenizer_dir, on_error="skip"), tiny_tokenizer)
    assert bundle.report.rejected_reasons == {"empty assistant content": 1} and len(bundle.train) == 5
    (reject,) = [json.loads(line) for line in bundle.rejects.decode().splitlines()]
    assert reject["source"].endswith("p.jsonl:2") and reject["raw"]["rejected"] == "   "
