"""Tool calls through a live `lmforge serve`: a tiny model taught one call in the built-in qwen template (a few
hundred optimizer steps on that one reply) is asked the same question with the same tool offered, and the openai
client gets the call back as `tool_calls`, plain and streamed."""

from __future__ import annotations

import json

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.data.chat.masks import generation_prompt
from lmforge.data.chat.render import Renderer
from lmforge.data.chat.templates import BUILTIN_TEMPLATES
from lmforge.infer.chat import stop_token_ids
from lmforge.train.rundir import TEMPLATE_FILE

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def reply_ids(tokenizer, template: str) -> tuple[list[int], list[int]]:
    """(the prompt's ids, the reply's ids up to and with its stop token) of USER answered by CALL."""
    prompt = generation_prompt(tokenizer, template, [USER], [WEATHER])
    renderer = Renderer(tokenizer, template)
    whole = renderer.render(
        renderer.prepare([USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}]), [WEATHER]
    )
    assert whole.startswith(prompt)
    ids = tokenizer(whole[len(prompt) :], add_special_tokens=False)["input_ids"]
    stops = set(stop_token_ids(tokenizer, template))
    end = next(i for i, t in enumerate(ids) if t in stops)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"], ids[: end + 1]


@pytest.fixture(scope="module")
def taught_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model trained to answer USER with CALL, saved with the qwen template as its run's template."""
    template = BUILTIN_TEMPLATES["qwen"].read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt, reply = reply_ids(tokenizer, template)
    ids = torch.tensor([prompt + reply])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.max_position_embeddings = 1024  # the qwen tool preamble alone is ~470 of this tokenizer's tokens
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(300):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 1e-2:
            break
    model.eval()
    taught = model.generate(torch.tensor([prompt]), max_new_tokens=len(reply), do_sample=False)[0, len(prompt) :]
    if taught.tolist() != reply:  # the premise, checked apart from the server
        pytest.fail(f"the tiny model did not learn the call (loss {loss.item():.4f}): {tokenizer.decode(taught)!r}")
    out = tmp_path_factory.mktemp("taught")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / TEMPLATE_FILE).write_text(template, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def client(start_server, taught_dir):
    live = start_server(str(taught_dir), "--name", "taught")
    yield openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    live.stop()


def test_a_call_comes_back_as_tool_calls(client):
    done = client.chat.completions.create(model="taught", messages=[USER], tools=[WEATHER], temperature=0)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_a_streamed_call_comes_back_as_tool_calls(client):
    chunks = list(
        client.chat.completions.create(model="taught", messages=[USER], tools=[WEATHER], temperature=0, stream=True)
    )
    calls = [c for chunk in chunks for choice in chunk.choices for c in (choice.delta.tool_calls or [])]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
