"""The mask property at the token level, on every shared tokenizer with its own template.

Each labelled run of a sample must start exactly where the ids of `apply_chat_template(history,
add_generation_prompt=True)` end, those ids being the sample's own first ids (what the model reads at
inference), and its text must be what the model writes there: a lead-in (whitespace, a think block holding
the turn's reasoning, a harmony header), the reply, then end-of-turn text of special tokens and whitespace.
The expectations come from transformers' apply_chat_template and the conversations written here, not from
lmforge. Replies that begin with newlines, spaces and tabs are the case that broke it: on byte-level
vocabularies a reply's first newline merged with the generation prompt's last one into a token the prompt
never has at inference.
"""

from __future__ import annotations

import re

import pytest
from label_runs import labelled_runs

from lmforge.data.chat.masks import WHOLE, MaskPolicy, TokenPrefixError, encode
from lmforge.data.chat.templates import resolve_chat_template
from lmforge.data.records import Conversation, Message
from lmforge.errors import LmforgeError

from shared_assets import load, only


def conv(*messages: Message, source: str = "t.jsonl:1") -> Conversation:
    return Conversation(list(messages), source)


def user(text: str) -> Message:
    return Message("user", text)


def reply(text: str, reasoning: str | None = None, trained: bool | None = None) -> Message:
    return Message("assistant", text, reasoning=reasoning, trained=trained)


WHITESPACE = [
    conv(user("q"), reply(lead + "reply text"), source=f"ws.jsonl:{k}")
    for k, lead in enumerate(("\n", "\n\n", " ", "  ", "\t", " \n", "\n\t"), 1)
] + [
    conv(user("a"), reply("\nfirst\n"), user("b"), reply("\tsecond "), source="ws.jsonl:8"),
    conv(Message("system", "sys"), user("a"), reply("  one"), user("b"), reply("two\n\n"), source="ws.jsonl:9"),
]
REASONING = [
    conv(user("2+2?"), reply("4", reasoning="Two and two make four."), source="r.jsonl:1"),
    conv(user("5+5?"), reply("<think>\nFive and five.\n</think>\n\n10"), source="r.jsonl:2"),
    conv(
        user("2+2?"),
        reply("4", reasoning="add two"),
        user("3+3?"),
        reply("6", reasoning="add three"),
        user("and 1+1?"),
        reply("2"),
        source="r.jsonl:3",
    ),
    conv(user("plain"), reply("no reasoning given"), user("again"), reply("still none"), source="r.jsonl:4"),
]
MARKERS = [
    conv(user("What do <|im_end|>, [/INST] and <|eot_id|> mean?"), reply("Markers, like </s> and <|end|>.")),
    conv(user("Unicode ✓"), reply("Grüße — 東京 🚀 naïve «ok»")),
]


def given_reasoning(message: dict) -> tuple[str, str]:
    """(reasoning, reply) of an assistant message as written in the record."""
    content = message["content"]
    if "</think>" in content:
        reasoning, _, answer = content.partition("</think>")
        return reasoning.replace("<think>", "").strip(), answer.strip()
    return (message.get("reasoning_content") or "").strip(), content


def lead_in(reasoning: str) -> re.Pattern:
    """What the model may write before the reply: whitespace, a think block (or its rest, where the generation
    prompt opened it) holding the reasoning, or a harmony analysis message and final-channel header."""
    r = re.escape(reasoning)
    return re.compile(
        rf"\s*(?:(?:<think>)?\s*{r}\s*</think>"
        rf"|(?:<\|channel\|>analysis<\|message\|>{r}<\|end\|><\|start\|>assistant)?"
        rf"(?:<\|channel\|>final)?<\|message\|>)?\s*"
    )


def special_strings(tok) -> list[str]:
    tokens = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
    return sorted(tokens, key=len, reverse=True)


def check_samples(tok, template: str, c: Conversation, samples) -> None:
    messages = c.as_dicts()
    turns = [i for i, m in zip(range(len(messages)), c.messages) if m.role == "assistant" and m.trained is not False]
    split = len(samples) > 1 or samples[0].split
    assert not split or len(samples) == len(turns)
    for k, sample in enumerate(samples):
        runs = labelled_runs(sample.labels)
        these = [turns[k]] if split else turns
        assert len(runs) == len(these), [tok.decode(sample.input_ids[a:b]) for a, b in runs]
        for (a, b), i in zip(runs, these):
            prompt = list(
                tok.apply_chat_template(messages[:i], chat_template=template, add_generation_prompt=True)["input_ids"]
            )
            assert sample.input_ids[: len(prompt)] == prompt, (c.source, i)  # what the model reads at inference
            assert a == len(prompt), (c.source, i)  # and the labels start right there
            assert sample.labels[a:b] == sample.input_ids[a:b]
            labelled = tok.decode(sample.input_ids[a:b])
            reasoning, answer = given_reasoning(messages[i])
            lead = lead_in(reasoning).match(labelled)
            body = labelled[lead.end() :]
            if reasoning:
                assert reasoning in labelled[: lead.end()], (labelled, reasoning)
            said = next((r for r in (answer.lstrip(), answer.strip()) if body.startswith(r)), None)
            assert said is not None, (labelled, answer)
            tail = body[len(said) :]
            rest = tail
            for special in special_strings(tok):
                rest = rest.replace(special, "")
            assert not rest.strip() and rest != tail, (labelled, tail)  # only special tokens end the turn


# Own templates that write a reasoning field (Qwen3's), or leave it to the model in a way lmforge writes
# (reasoning.py: DeepSeek-R1's open think block, gpt-oss's harmony channels).
WRITES_REASONING = {"qwen3", "deepseek-r1-distill-qwen", "gpt-oss"}


@pytest.mark.parametrize("group", ["whitespace", "reasoning", "markers"])
def test_labels_start_where_the_generation_prompt_ends(shared_tokenizer_dir, group):
    tok = load(shared_tokenizer_dir)
    template = tok.chat_template or resolve_chat_template(tok, "llama2")
    convs = {"whitespace": WHITESPACE, "reasoning": REASONING, "markers": MARKERS}[group]
    for c in convs:
        field = any(m.reasoning for m in c.messages)
        if field and shared_tokenizer_dir.name not in WRITES_REASONING:
            with pytest.raises(LmforgeError, match=rf"{c.source}: .*does not write reasoning"):
                encode(tok, template, c, MaskPolicy())
            continue
        if shared_tokenizer_dir.name == "gpt-oss" and "<think>" in c.messages[1].content:
            continue  # moved into the reasoning field first: test_gpt_oss_reasoning_is_an_analysis_message
        check_samples(tok, template, c, encode(tok, template, c, MaskPolicy()))


@only("qwen3")
def test_a_reply_opening_with_a_newline_is_tokenised_apart_from_the_prompt(shared_tokenizer_dir):
    """Rendered whole, 'assistant\\n' + '\\nfirst' tokenises as 'ĊĊ'; the prompt at inference ends with 'Ċ'."""
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, "chatml")  # writes the reply right after 'assistant\n', unlike Qwen3's own
    single = conv(user("a"), reply("\nfirst"))
    (sample,) = encode(tok, template, single, MaskPolicy())
    ((a, b),) = labelled_runs(sample.labels)
    assert tok.convert_ids_to_tokens(sample.input_ids[a - 1 : a + 2]) == ["Ċ", "Ċ", "first"]
    assert tok.convert_ids_to_tokens(tok(sample.text)["input_ids"])[a - 1] == "ĊĊ"  # what whole tokenising gives
    check_samples(tok, template, single, [sample])

    two = conv(user("a"), reply("\nfirst"), user("b"), reply("second"), source="nl.jsonl:2")
    samples = encode(tok, template, two, MaskPolicy())  # the history tokenises unlike turn 1's prompt: split
    assert len(samples) == 2 and all(s.split for s in samples)
    check_samples(tok, template, two, samples)
    with pytest.raises(TokenPrefixError, match=r"nl.jsonl:2: token boundary: .*data.split_turns: auto"):
        encode(tok, template, two, WHOLE)


@only("qwen3")
def test_reply_merging_with_prompt_text_is_tokenised_apart(shared_tokenizer_dir):
    """phi3's markers are not special tokens of Qwen3: '<|assistant|>\\n' + '\\n\\nblank first' merges '>' with the
    newlines when tokenised whole. The sample keeps the prompt's own tokens and the reply's after them."""
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, "phi3")
    c = conv(user("x"), reply("\n\nblank first"), source="b.jsonl:2")
    (sample,) = encode(tok, template, c, WHOLE)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "x"}], chat_template=template, add_generation_prompt=True
    )
    ((a, _),) = labelled_runs(sample.labels)
    assert sample.input_ids[:a] == list(prompt["input_ids"])
    assert tok.decode(sample.input_ids[a:]).startswith("\n\nblank first<|end|>")


@only("qwen3", "llama3_1")
def test_a_turn_marked_untrained_carries_no_loss(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    c = conv(user("a"), reply("not this one", trained=False), user("b"), reply("this one"))
    (sample,) = encode(tok, tok.chat_template, c, MaskPolicy())
    ((a, b),) = labelled_runs(sample.labels)
    assert "this one" in tok.decode(sample.input_ids[a:b]) and "not this" not in tok.decode(sample.input_ids[a:b])
    check_samples(tok, tok.chat_template, c, [sample])
    samples = encode(tok, tok.chat_template, c, MaskPolicy(split_turns="always"))
    assert len(samples) == 1 and samples[0].labels == sample.labels


@only("deepseek-r1-distill-qwen")
def test_deepseek_r1_turns_continue_the_open_think_block(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    eos = "<｜end▁of▁sentence｜>"
    cases = [
        (reply("4", reasoning="Two and two."), "Two and two.\n</think>\n\n4" + eos),
        (reply("<think>\nTwo and two.\n</think>\n\n4"), "Two and two.\n</think>\n\n4" + eos),
        (reply("4"), "\n</think>\n\n4" + eos),  # no reasoning given: an empty think block, as Qwen3 writes one
    ]
    for message, labelled in cases:
        (sample,) = encode(tok, tok.chat_template, conv(user("2+2?"), message), MaskPolicy())
        ((a, b),) = labelled_runs(sample.labels)
        assert tok.decode(sample.input_ids[:a]).endswith("<｜Assistant｜><think>\n")
        assert tok.decode(sample.input_ids[a:b]) == labelled and b == len(sample.input_ids)
    samples = encode(tok, tok.chat_template, REASONING[2], MaskPolicy())
    assert len(samples) == 3
    assert "add two" not in tok.decode(samples[1].input_ids)  # earlier reasoning dropped, as at inference
    assert tok.decode(samples[1].input_ids).count("<think>") == 1


@only("gpt-oss")
def test_gpt_oss_reasoning_is_an_analysis_message(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    (sample,) = encode(tok, tok.chat_template, REASONING[0], MaskPolicy())
    ((a, b),) = labelled_runs(sample.labels)
    assert tok.decode(sample.input_ids[a:b]) == (
        "<|channel|>analysis<|message|>Two and two make four.<|end|><|start|>assistant"
        "<|channel|>final<|message|>4<|end|>"
    )
    inline = conv(user("2+2?"), reply("<think>\nTwo and two make four.\n</think>\n\n4"))
    assert encode(tok, tok.chat_template, inline, MaskPolicy()) == [sample]
    samples = encode(tok, tok.chat_template, REASONING[2], MaskPolicy())
    assert len(samples) == 3 and all(s.split for s in samples)
    history = tok.decode(samples[2].input_ids)
    assert "add two" not in history and "add three" not in history  # the template drops earlier analysis
    (plain,) = encode(tok, tok.chat_template, REASONING[3], MaskPolicy())  # no reasoning: one sample
    assert [tok.decode(plain.input_ids[a:b]) for a, b in labelled_runs(plain.labels)] == [
        "<|message|>no reasoning given<|end|>",
        "<|message|>still none<|end|>",
    ]


def test_no_second_think_block_where_the_template_writes_its_own(tiny_tokenizer_dir):
    """A template whose generation prompt opens <think> but whose rendered turn writes a different think block
    of its own gets no block written by lmforge on top of it: refused, not trained with two blocks."""
    tok = load(tiny_tokenizer_dir)
    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}<A><think>x</think>{{ m['content'] }}{{ eos_token }}"
        "{% else %}<U>{{ m['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<A><think>\n{% endif %}"
    )
    with pytest.raises(LmforgeError, match="t.jsonl:1: .*prefix property failed"):
        encode(tok, template, conv(user("q"), reply("a", reasoning="r")), MaskPolicy())
