"""Replies through the chat template, and the `lmforge chat` REPL on saved tiny runs (loading a run: test_load.py)."""

from __future__ import annotations

import io

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.errors import LmforgeError
from lmforge.infer.chat import GREEDY, Sampling, chat, generate_replies, generate_reply, stop_token_ids

MESSAGES = [{"role": "user", "content": "What is 7 times 6?"}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return model, tokenizer, tokenizer.chat_template


def test_generate_reply_returns_new_text_only_and_stops_at_max_new_tokens(tiny):
    model, tokenizer, template = tiny
    reply = generate_reply(model, tokenizer, template, MESSAGES, max_new_tokens=4)
    assert isinstance(reply, str)
    assert "<|im_start|>" not in reply and "What is" not in reply
    prompt = tokenizer.apply_chat_template(MESSAGES, chat_template=template, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logits_path = model.generate(
        ids, max_new_tokens=4, do_sample=False, eos_token_id=stop_token_ids(tokenizer, template)
    )
    new = logits_path[0, ids.shape[1] :]
    assert len(new) <= 4
    assert reply == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert generate_reply(model, tokenizer, template, MESSAGES, max_new_tokens=4) == reply  # greedy


def test_batched_replies_equal_one_at_a_time(tiny):
    model, tokenizer, template = tiny
    conversations = [
        MESSAGES,
        [{"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 12 plus 30?"},
            {"role": "assistant", "content": "42."},
            {"role": "user", "content": "And 2 plus 2?"},
        ],
    ]
    one_by_one = [generate_reply(model, tokenizer, template, c, max_new_tokens=6) for c in conversations]
    assert generate_replies(model, tokenizer, template, conversations, max_new_tokens=6, batch_size=2) == one_by_one


def test_stop_tokens_are_eos_and_the_end_of_turn(tiny):
    _, tokenizer, template = tiny
    assert stop_token_ids(tokenizer, template) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_stop_tokens_of_real_templates(shared_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(shared_tokenizer_dir))
    if not tokenizer.chat_template:
        pytest.skip(f"{shared_tokenizer_dir.name} has no chat template")
    stops = stop_token_ids(tokenizer, tokenizer.chat_template)
    assert stops and set(stops) <= set(tokenizer.all_special_ids)


def run_chat(run_dir, lines: str, max_new_tokens: int = 3, **options) -> str:
    out = io.StringIO()
    chat(run_dir, max_new_tokens=max_new_tokens, stdin=io.StringIO(lines), stdout=out, **options)
    return out.getvalue()


def test_chat_keeps_history_resets_and_exits(tiny_model_dir):
    out = run_chat(
        tiny_model_dir, "What is 2 plus 3?\nAnd 5 minus 3?\n/reset\n/system Be brief.\nhi\n/exit\nnot read\n"
    )
    assert out.count("assistant> ") == 3
    assert "(history cleared)" in out and "(system prompt set; history cleared)" in out
    assert out.count("you> ") == 6  # the line after /exit is never read


def test_chat_ends_at_end_of_input(tiny_model_dir):
    out = run_chat(tiny_model_dir, "hello\n")
    assert out.count("assistant> ") == 1 and out.endswith("you> \n")


def test_chat_runs_on_a_peft_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(tmp_path / "adapter"))
    assert run_chat(tmp_path / "adapter", "hi\n").count("assistant> ") == 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 0}, "--temperature 0: expected a number above 0"),
        ({"top_p": 1.5}, "--top-p 1.5: expected a number above 0 and at most 1"),
        ({"top_k": -1}, "--top-k -1: expected 0"),
        ({"repetition_penalty": 0}, "--repetition-penalty 0: expected a number above 0"),
    ],
)
def test_sampling_settings_are_checked(options, message):
    with pytest.raises(LmforgeError, match=message):
        Sampling(**options)


def test_replies_stream_as_generated_and_a_seeded_session_repeats(tiny_model_dir, tiny):
    model, tokenizer, template = tiny
    greedy = run_chat(tiny_model_dir, "What is 7 times 6?\n", max_new_tokens=12, sampling=GREEDY)
    expected = generate_reply(model, tokenizer, template, MESSAGES, max_new_tokens=12)
    streamed = greedy.split("assistant> ", 1)[1].split("\nyou> ")[0]
    assert streamed.strip() == expected  # what was written piece by piece is the reply
    hot = Sampling(temperature=5.0, top_p=1.0, seed=3)
    first = run_chat(tiny_model_dir, "hi\nagain\n", max_new_tokens=12, sampling=hot)
    assert run_chat(tiny_model_dir, "hi\nagain\n", max_new_tokens=12, sampling=hot) == first
    other = run_chat(
        tiny_model_dir, "hi\nagain\n", max_new_tokens=12, sampling=Sampling(temperature=5.0, top_p=1.0, seed=4)
    )
    assert other != first  # the seed is what repeats it: another seed samples other tokens
