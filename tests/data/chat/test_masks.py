"""Loss masks from chat templates, checked on the real tokenizers in ../shared/tokenizers.

The check here is stricter than ../shared/check/mask_check.py: each labelled run, read back from the
text by character offsets, must be an optional lead-in (whitespace, a <think> block), then the reply
as written (or trimmed), then exactly the template's end-of-turn text, and nothing else is labelled.
Exact expectations come from outside lmforge: transformers' assistant mask for a template with {% generation %}
blocks, and labelled texts written out by hand for a few small conversations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from label_runs import labelled_runs

from lmforge.data.chat.masks import WHOLE, MaskPolicy, PrefixPropertyError, encode, generation_prompt
from lmforge.data.chat.templates import BUILTIN_TEMPLATES, resolve_chat_template
from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.records import Conversation, Message
from lmforge.errors import LmforgeError
from lmforge.quickstart.assets import CHAT_TEMPLATE

from shared_assets import SHARED, load, only, skip_if_prompt_not_a_prefix

# What the model writes before a reply: whitespace, a think block, or a harmony header (gpt-oss)
LEAD_IN = re.compile(r"\s*(?:<think>.*?</think>|<\|channel\|>final<\|message\|>|<\|message\|>)?\s*", re.DOTALL)


def conv(*pairs: tuple[str, str], source: str = "test.jsonl:1") -> Conversation:
    return Conversation([Message(role, content) for role, content in pairs], source)


HARD = [
    conv(
        ("system", "You are terse."),
        ("user", "Repeat after me: hello there"),
        ("assistant", "hello there"),
        ("user", "Again, hello there"),
        ("assistant", "hello there"),
    ),
    conv(("user", "Pad it"), ("assistant", "  padded reply with spaces  "), ("user", "ok"), ("assistant", " x")),
    conv(("user", "Lines?"), ("assistant", "line one\n\nline two\n")),
    conv(("user", "Unicode"), ("assistant", "Grüße — 東京 🚀 ｜ naïve «ok»")),
    conv(("user", "Say only OK."), ("assistant", "OK")),
    conv(("user", "Compare"), ("assistant", "a < b and c > d; [/INST] is text here")),
    conv(("system", "sys"), ("user", "no reply yet")),
]


def shared_conversations() -> list[Conversation]:
    path = SHARED / "check" / "chat.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        conv(*((m["role"], m["content"]) for m in json.loads(line)["messages"]), source=f"chat.jsonl:{n}")
        for n, line in enumerate(lines, 1)
        if line.strip()
    ]


def own_template(tok_dir: Path) -> str:
    """The tokenizer's own template; the base-model llama2 tokenizer has none and takes the built-in."""
    tok = load(tok_dir)
    return resolve_chat_template(tok, None if tok.chat_template else "llama2")


# What each template writes after a reply; `eos` is the tokenizer's EOS token.
END_OF_TURN = {
    "chatml": "<|im_end|>",
    "qwen": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "llama2": " {eos}",
    "mistral": "{eos}",
    "vicuna": "{eos}",
    "alpaca": "{eos}",
    "gemma": "<end_of_turn>",
    "phi3": "<|end|>",
    "deepseek": "{eos}",
}
OWN_END_OF_TURN = {
    "qwen3": "<|im_end|>",
    "llama3_1": "<|eot_id|>",
    "gemma3": "<end_of_turn>",
    "deepseek_v3": "<｜end▁of▁sentence｜>",
    "llama2": " </s>",
    "deepseek-r1-distill-qwen": "<｜end▁of▁sentence｜>",
    "gpt-oss": "<|end|>",
}


def assert_mask(tok, template: str, c: Conversation, end_of_turn: str) -> None:
    enc = encode(tok, template, c, WHOLE)[0]
    messages = c.as_dicts()
    assert len(enc.labels) == len(enc.input_ids)
    assert enc.input_ids == list(tok.apply_chat_template(messages, chat_template=template)["input_ids"])
    offsets = tok(enc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    runs = labelled_runs(enc.labels)
    assert len(runs) == len(turns), [tok.decode(enc.input_ids[a:b]) for a, b in runs]
    for (a, b), i in zip(runs, turns):
        content = messages[i]["content"]
        assert enc.labels[a:b] == enc.input_ids[a:b]
        start = offsets[a][0]
        labelled = enc.text[start : offsets[b - 1][1]]
        lead = LEAD_IN.match(labelled).end()
        body = next(
            (
                w
                for w in (content.lstrip() + end_of_turn, content.strip() + end_of_turn)
                if labelled.startswith(w, lead)
            ),
            None,
        )
        assert body is not None, (labelled, content)
        # only the last token may reach past the end of turn (a text stop token merged with what follows)
        assert offsets[b - 1][0] < start + lead + len(body), (labelled, content)
        decoded = tok.decode(enc.input_ids[a:b])
        decoded = decoded[LEAD_IN.match(decoded).end() :].strip()
        assert decoded.startswith(content.strip()) and decoded[len(content.strip()) :].strip()
        prompt = generation_prompt(tok, template, messages[:i])
        assert enc.text.startswith(prompt)  # the inference prompt is a prefix of the training text
        assert offsets[a][1] > len(prompt) and (a == 0 or offsets[a - 1][1] <= len(prompt))


def test_own_template_masks(shared_tokenizer_dir):
    skip_if_prompt_not_a_prefix(shared_tokenizer_dir)
    tok = load(shared_tokenizer_dir)
    template = own_template(shared_tokenizer_dir)
    for c in shared_conversations() + HARD:
        assert_mask(tok, template, c, OWN_END_OF_TURN[shared_tokenizer_dir.name])


@pytest.mark.parametrize("name", sorted(BUILTIN_TEMPLATES))
def test_builtin_template_masks(shared_tokenizer_dir, name):
    """Every built-in on every shared tokenizer, including the {% generation %} cross-check."""
    tok = load(shared_tokenizer_dir)
    template = resolve_chat_template(tok, name)
    assert re.search(r"\{%-?\s*generation\s*-?%\}", template)
    for c in shared_conversations() + HARD:
        assert_mask(tok, template, c, END_OF_TURN[name].format(eos=tok.eos_token))


@only("qwen3")
def test_reasoning_in_last_turn_is_labelled(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    c = conv(("user", "2+2?"), ("assistant", "<think>\nadd them\n</think>\n\n4"))
    enc = encode(tok, tok.chat_template, c, WHOLE)[0]
    labelled = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert tok.decode(labelled) == "<think>\nadd them\n</think>\n\n4<|im_end|>"


@only("qwen3")
def test_dropped_reasoning_of_earlier_turn_fails(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    c = conv(
        ("user", "2+2?"), ("assistant", "<think>add</think>4"), ("user", "3+3?"), ("assistant", "6"), source="r.jsonl:4"
    )
    with pytest.raises(LmforgeError, match=r"r.jsonl:4: assistant turn 0 .*content not found.*drops the reasoning"):
        encode(tok, tok.chat_template, c, WHOLE)[0]


def test_conversation_without_reply_has_no_labels(shared_tokenizer_dir):
    enc = encode(load(shared_tokenizer_dir), own_template(shared_tokenizer_dir), HARD[-1], WHOLE)[0]
    assert enc.input_ids and set(enc.labels) == {IGNORE_INDEX}


# Templates with a broken property, written inline.
NO_PREFIX = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT> {% endif %}"
)
NO_STOP = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
WIDE_GENERATION = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] }}<|im_end|>\n{% endgeneration %}{% else %}"
    "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QA = conv(("user", "hi"), ("assistant", "hello"), source="data.jsonl:7")


@pytest.mark.parametrize(
    "template, message",
    [
        (NO_PREFIX, r"data.jsonl:7: assistant turn 0 \(message 1\): prefix property failed.*model.chat_template"),
        (NO_STOP, r"data.jsonl:7: assistant turn 0 \(message 1\): no stop token.*never learn to stop"),
    ],
)
def test_broken_template_fails_with_reason(shared_tokenizer_dir, template, message):
    with pytest.raises(LmforgeError, match=message):
        encode(load(shared_tokenizer_dir), template, QA, WHOLE)[0]


@only("qwen3")
def test_a_template_that_fails_per_turn_too_does_not_suggest_splitting(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    with pytest.raises(PrefixPropertyError, match=r"data.split_turns to auto \(the default\) or always"):
        encode(tok, NO_PREFIX, QA, WHOLE)
    for policy in (MaskPolicy(), MaskPolicy(split_turns="always")):  # already one sample per turn: say so
        with pytest.raises(LmforgeError, match=r"even with one sample per assistant turn") as err:
            encode(tok, NO_PREFIX, QA, policy)
        assert "set data.split_turns" not in str(err.value)


@only("qwen3")
def test_generation_blocks_that_disagree_fail(shared_tokenizer_dir):
    with pytest.raises(LmforgeError, match=r"data.jsonl:7: the template's \{% generation %\} blocks mark other"):
        encode(load(shared_tokenizer_dir), WIDE_GENERATION, QA, WHOLE)[0]


@only("gemma3")
def test_template_that_rejects_roles_fails(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    c = conv(("user", "a"), ("user", "b"), ("assistant", "c"), source="data.jsonl:3")
    for template in (tok.chat_template, resolve_chat_template(tok, "gemma")):
        with pytest.raises(
            LmforgeError, match=r'data.jsonl:3: the chat template( \(built-in "gemma"\))? rejects .*alternate'
        ):
            encode(tok, template, c, WHOLE)[0]


@only("llama3_1")
def test_bad_conversations_fail(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    with pytest.raises(LmforgeError, match=r"x:1: the conversation opens with an assistant message"):
        encode(tok, tok.chat_template, conv(("assistant", "hi"), ("user", "yo"), source="x:1"), WHOLE)[0]
    with pytest.raises(LmforgeError, match="x:2: the conversation has no messages"):
        encode(tok, tok.chat_template, Conversation([], "x:2"), WHOLE)[0]


def test_last_assistant_labels_only_the_last_turn(shared_tokenizer_dir):
    skip_if_prompt_not_a_prefix(shared_tokenizer_dir)
    tok, template = load(shared_tokenizer_dir), own_template(shared_tokenizer_dir)
    for c in shared_conversations() + HARD[:-1]:
        whole = encode(tok, template, c, WHOLE)[0]
        last = encode(tok, template, c, MaskPolicy("last_assistant", "never"))[0]
        assert last.input_ids == whole.input_ids and last.text == whole.text
        ((a, b),) = labelled_runs(last.labels)
        assert (a, b) == labelled_runs(whole.labels)[-1]
        assert last.labels[a:b] == whole.labels[a:b]


def test_everything_labels_every_token_but_the_first(shared_tokenizer_dir):
    """The first token (BOS where the template writes one) is never a target: nothing in the sample precedes it."""
    skip_if_prompt_not_a_prefix(shared_tokenizer_dir)
    tok, template = load(shared_tokenizer_dir), own_template(shared_tokenizer_dir)
    for c in shared_conversations()[:2] + [HARD[-1]]:
        enc = encode(tok, template, c, MaskPolicy("everything", "never"))[0]
        assert enc.input_ids == encode(tok, template, c, WHOLE)[0].input_ids
        assert enc.labels == [IGNORE_INDEX] + enc.input_ids[1:]
    if tok.bos_token and template.lstrip().startswith(("{{ bos_token", "{{- bos_token")):
        assert enc.input_ids[0] == tok.bos_token_id


def test_split_turns_samples_match_the_whole_conversation(shared_tokenizer_dir):
    """Where the prefix property holds, per-turn samples label the same text as the whole conversation."""
    skip_if_prompt_not_a_prefix(shared_tokenizer_dir)
    tok, template = load(shared_tokenizer_dir), own_template(shared_tokenizer_dir)
    for c in shared_conversations() + HARD[:-1]:
        whole = encode(tok, template, c, WHOLE)[0]
        assert encode(tok, template, c, MaskPolicy("all_assistant", "auto")) == [whole]
        assert encode(tok, template, c, MaskPolicy("all_assistant", "never")) == [whole]
        samples = encode(tok, template, c, MaskPolicy("all_assistant", "always"))
        assert all(s.split for s in samples) and len(samples) == len(labelled_runs(whole.labels))
        for sample, (a, b) in zip(samples, labelled_runs(whole.labels)):
            ((c0, c1),) = labelled_runs(sample.labels)
            ours, theirs = tok.decode(sample.input_ids[c0:c1]), tok.decode(whole.input_ids[a:b])
            assert ours[LEAD_IN.match(ours).end() :] == theirs[LEAD_IN.match(theirs).end() :]  # Qwen3: empty think
            assert sample.input_ids[:c0] == whole.input_ids[:a]  # the history, as the whole conversation renders it
        last_only = encode(tok, template, c, MaskPolicy("last_assistant", "always"))
        assert len(last_only) == 1 and last_only[0].labels == samples[-1].labels


REASONING = [
    conv(
        ("system", "Think first."),
        ("user", "2+2?"),
        ("assistant", "<think>\nadd two and two\n</think>\n\n4"),
        ("user", "3+3?"),
        ("assistant", "<think>\nadd three\n</think>\n\n6"),
        ("user", "and 1+1?"),
        ("assistant", "2"),
        source="r.jsonl:1",
    ),
    Conversation(
        [
            Message("user", "2+2?"),
            Message("assistant", "4", reasoning="add two and two"),
            Message("user", "3+3?"),
            Message("assistant", "6", reasoning="add three"),
        ],
        "r.jsonl:2",
    ),
]


@only("qwen3")
@pytest.mark.parametrize("c", REASONING, ids=["in-content", "reasoning-field"])
def test_template_that_drops_earlier_reasoning_is_split(shared_tokenizer_dir, c):
    """Qwen3's own template drops the reasoning of turns before the last user message from the history."""
    tok = load(shared_tokenizer_dir)
    template = tok.chat_template
    with pytest.raises(
        PrefixPropertyError,
        match=r"r.jsonl:\d: assistant turn 0 .*(content not found|reasoning dropped).*reasoning.*"
        r"data.split_turns",
    ):
        encode(tok, template, c, WHOLE)[0]
    with pytest.raises(PrefixPropertyError):
        encode(tok, template, c, MaskPolicy("all_assistant", "never"))
    messages = c.as_dicts()
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for policy in ("auto", "always"):
        samples = encode(tok, template, c, MaskPolicy("all_assistant", policy))
        assert len(samples) == len(turns) and all(s.split for s in samples)
        for sample, i in zip(samples, turns):
            assert sample.text == tok.apply_chat_template(messages[: i + 1], tokenize=False)
            ((a, b),) = labelled_runs(sample.labels)
            prompt = generation_prompt(tok, template, messages[:i])
            assert tok.decode(sample.input_ids[:a]) == prompt  # the prompt is the inference render, token for token
            assert sample.input_ids[:a] == tok(prompt, add_special_tokens=False)["input_ids"]
            reasoning = messages[i].get("reasoning_content") or messages[i]["content"].partition("</think>")[0][8:]
            answer = messages[i]["content"].rpartition("</think>")[2].strip()
            assert tok.decode(sample.labels[a:b]) == f"<think>\n{reasoning.strip()}\n</think>\n\n{answer}<|im_end|>"
    last = encode(tok, template, c, MaskPolicy("last_assistant", "auto"))
    assert len(last) == 1 and not last[0].split  # the last turn alone keeps the prefix property
    assert last[0].labels == samples[-1].labels
    whole = encode(tok, template, c, MaskPolicy("everything", "auto"))
    assert len(whole) == 1 and not whole[0].split


def test_unknown_policies_fail(shared_tokenizer_dir):
    tok, template = load(shared_tokenizer_dir), own_template(shared_tokenizer_dir)
    with pytest.raises(
        LmforgeError, match="data.train_on: unknown value 'all'; use one of all_assistant, last_assistant, everything"
    ):
        encode(tok, template, QA, MaskPolicy("all", "never"))[0]
    with pytest.raises(LmforgeError, match="data.split_turns: unknown value 'sometimes'"):
        encode(tok, template, QA, MaskPolicy("all_assistant", "sometimes"))


def test_split_without_reply_gives_one_unlabelled_sample(shared_tokenizer_dir):
    tok, template = load(shared_tokenizer_dir), own_template(shared_tokenizer_dir)
    samples = encode(tok, template, HARD[-1], MaskPolicy("all_assistant", "always"))
    assert len(samples) == 1 and set(samples[0].labels) == {IGNORE_INDEX}


CAPITALS = conv(
    ("system", "Answer in one line."),
    ("user", "Capital of France?"),
    ("assistant", "Paris."),
    ("user", "And of Japan?"),
    ("assistant", "Tokyo."),
)
TIMES = conv(("user", "What is 7 times 6?"), ("assistant", "7 times 6 is 42."))
SPACED = conv(("user", "Pad it"), ("assistant", "  padded  "), ("user", "ok"), ("assistant", "line one\n\nline two\n"))


def generation_labels(tok, template: str, c: Conversation) -> tuple[list[int], list[int]]:
    """transformers' tokens of the conversation and its assistant mask for the template's {% generation %}
    blocks, written as labels (the token where marked, IGNORE_INDEX elsewhere)."""
    out = tok.apply_chat_template(
        c.as_dicts(), chat_template=template, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(out["input_ids"])
    return ids, [t if marked else IGNORE_INDEX for t, marked in zip(ids, out["assistant_masks"])]


def assert_generation_labels(tok, conversations: list[Conversation]) -> None:
    """lmforge's labels under the quickstart's template are transformers' assistant mask, token for token."""
    for c in conversations:
        ids, labels = generation_labels(tok, CHAT_TEMPLATE, c)
        runs = labelled_runs(labels)
        assert len(runs) == sum(m.role == "assistant" for m in c.messages) and labels[0] == IGNORE_INDEX
        whole = encode(tok, CHAT_TEMPLATE, c, WHOLE)[0]
        assert whole.input_ids == ids
        assert whole.labels == labels
        last_only = [IGNORE_INDEX] * len(ids)
        for a, b in runs[-1:]:
            last_only[a:b] = ids[a:b]
        assert encode(tok, CHAT_TEMPLATE, c, MaskPolicy("last_assistant", "never"))[0].labels == last_only


def test_labels_are_the_generation_mask_of_transformers(shared_tokenizer_dir):
    assert_generation_labels(load(shared_tokenizer_dir), [CAPITALS, TIMES, SPACED] + shared_conversations() + HARD)


def test_labels_are_the_generation_mask_on_the_quickstart_tokenizer(tiny_tokenizer_dir):
    """The tokenizer the quickstart and the benchmark build, whose own template is CHAT_TEMPLATE."""
    tok = load(tiny_tokenizer_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    assert_generation_labels(tok, [CAPITALS, TIMES, SPACED] + HARD)


# The text each own template trains on, by hand: the reply as the template writes it, then its end of turn.
# Qwen3's template opens the last reply with an empty think block, which the model generates at inference;
# Llama 3.1's trims each reply.
HAND_WRITTEN = {
    "qwen3": [
        (CAPITALS, ["Paris.<|im_end|>", "<think>\n\n</think>\n\nTokyo.<|im_end|>"]),
        (TIMES, ["<think>\n\n</think>\n\n7 times 6 is 42.<|im_end|>"]),
        (SPACED, ["  padded  <|im_end|>", "<think>\n\n</think>\n\nline one\n\nline two\n<|im_end|>"]),
    ],
    "llama3_1": [
        (CAPITALS, ["Paris.<|eot_id|>", "Tokyo.<|eot_id|>"]),
        (TIMES, ["7 times 6 is 42.<|eot_id|>"]),
        (SPACED, ["padded<|eot_id|>", "line one\n\nline two<|eot_id|>"]),
    ],
}


def labelled_texts(tok, enc) -> list[str]:
    """The text under each labelled run of tokens, read from the rendered text by character offsets."""
    tokens = tok(enc.text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens["input_ids"] == enc.input_ids
    offsets = tokens["offset_mapping"]
    for a, b in labelled_runs(enc.labels):
        assert enc.labels[a:b] == enc.input_ids[a:b]
    return [enc.text[offsets[a][0] : offsets[b - 1][1]] for a, b in labelled_runs(enc.labels)]


@only(*HAND_WRITTEN)
def test_own_template_labels_the_hand_written_text(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    for c, expected in HAND_WRITTEN[shared_tokenizer_dir.name]:
        assert labelled_texts(tok, encode(tok, tok.chat_template, c, WHOLE)[0]) == expected
        assert (
            labelled_texts(tok, encode(tok, tok.chat_template, c, MaskPolicy("last_assistant", "never"))[0])
            == expected[-1:]
        )
