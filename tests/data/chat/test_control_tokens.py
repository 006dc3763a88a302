from __future__ import annotations

import random

from lmforge.data.chat.control_tokens import special_pattern, special_strings, turn_end_warning
from lmforge.data.chat.templates import resolve_chat_template
from lmforge.data.chat.turn_ends import stop_pattern

from shared_assets import load, only


def special_tokens(tok) -> list[str]:
    return sorted(set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special})


def test_typed_special_strings_are_found_and_are_what_the_tokenizer_makes_control_tokens(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    tokens = special_tokens(tok)
    text = "Say " + " then ".join(random.Random(0).sample(tokens, min(len(tokens), 5))) + " please"
    found = special_strings(tok, text)
    assert found and all(s in tokens for s in found)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(tok.convert_tokens_to_ids(s) in ids for s in found)  # each one became its control token
    assert special_strings(tok, "no <control tokens> here, only <|text|>") == []
    assert special_strings(tok, "") == []


def test_the_trie_pattern_finds_what_the_longest_first_alternation_finds(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    tokens = special_tokens(tok)
    shuffled = random.Random(1).sample(tokens, len(tokens))
    text = " x ".join(shuffled) + "".join(tokens) + "<" + tokens[0][:-1]  # adjacent ones, and a token's prefix
    assert special_pattern(tok).findall(text) == stop_pattern(tok).findall(text)
    assert len(special_pattern(tok).findall(text)) == 2 * len(tokens)


@only("llama2")
def test_a_builtin_end_of_turn_that_is_no_special_token_is_a_warning(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    warning = turn_end_warning(tok, resolve_chat_template(tok, "chatml"))
    assert warning is not None
    assert warning.startswith("the chat template (built-in \"chatml\") ends assistant turns with '<|im_end|>'")
    assert "not a special token" in warning and "ordinary tokens" in warning and "model.chat_template" in warning
    assert turn_end_warning(tok, resolve_chat_template(tok, "llama2")) is None  # </s>: its EOS


@only("qwen3", "llama3_1", "gemma3", "gpt-oss", "deepseek_v3", "deepseek-r1-distill-qwen")
def test_own_templates_end_turns_with_a_special_token(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    assert turn_end_warning(tok, resolve_chat_template(tok, None)) is None


def test_the_quickstart_template_ends_turns_with_a_special_token(tiny_tokenizer_dir):
    tok = load(tiny_tokenizer_dir)
    assert turn_end_warning(tok, resolve_chat_template(tok, None)) is None


@only("qwen3")
def test_templates_the_probe_cannot_render_give_no_warning(shared_tokenizer_dir):
    tok = load(shared_tokenizer_dir)
    assert turn_end_warning(tok, "{{ raise_exception('no') }}") is None
    assert turn_end_warning(tok, "{% for m in messages %}{{ m['role'] }}{% endfor %}") is None  # drops the reply
    assert "'<end_of_turn>'" in turn_end_warning(tok, resolve_chat_template(tok, "gemma"))
