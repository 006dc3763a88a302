"""`lmforge serve` on the tiny model and a LoRA adapter, driven with the official openai client: the API's shapes,
the run's template, batching that changes no reply, and requests that must fail cleanly."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from lmforge.data.chat.masks import generation_prompt
from lmforge.infer.chat import generate_replies
from lmforge.infer.load import load_run

QUESTIONS = ["What is 2 plus 3?", "Name a colour.", "hi", "Count to five, please.", "Why is the sky blue?", "ok"]


@pytest.fixture(scope="module")
def server(start_server, tiny_model_dir, lora_dir):
    live = start_server(str(tiny_model_dir), "--name", "base", "--adapter", f"tuned={lora_dir}")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def run(tiny_model_dir):
    return load_run(tiny_model_dir, device="cpu", dtype="fp32")


def ask(client, question: str, model: str = "base", **options):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], **{"temperature": 0, **options}
    )


def test_models_lists_the_base_and_the_adapter(client):
    assert [m.id for m in client.models.list().data] == ["base", "tuned"]


def test_batched_greedy_replies_equal_one_at_a_time_and_generate_replies(client, server, run):
    alone = [ask(client, q, max_tokens=16, logprobs=True) for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: ask(client, q, max_tokens=16, logprobs=True), QUESTIONS))
    assert server.health()["models"]["base"]["peak_batch"] > 1  # they did run in one batch
    expected = generate_replies(
        run.model, run.tokenizer, run.template, [[{"role": "user", "content": q}] for q in QUESTIONS], 16
    )
    for one, many, reference in zip(alone, together, expected):
        assert many.choices[0].message.content == one.choices[0].message.content
        assert one.choices[0].message.content.strip() == reference
        for a, b in zip(one.choices[0].logprobs.content, many.choices[0].logprobs.content):
            assert b.logprob == pytest.approx(a.logprob, abs=1e-4)


def test_stream_chunks_join_to_the_plain_reply(client):
    plain = ask(client, QUESTIONS[0], max_tokens=20).choices[0]
    chunks = list(ask(client, QUESTIONS[0], max_tokens=20, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.message.content
    assert chunks[-1].choices[0].finish_reason == plain.finish_reason == "length"


def test_stream_ends_with_done(server):
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"


def test_usage_counts_equal_the_tokenizers(client, run):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTIONS[3]}]
    reply = client.chat.completions.create(model="base", messages=messages, max_tokens=7, temperature=0, n=2)
    prompt = run.tokenizer(generation_prompt(run.tokenizer, run.template, messages), add_special_tokens=False)
    assert reply.usage.prompt_tokens == len(prompt["input_ids"])
    assert reply.usage.completion_tokens == 2 * 7  # n=2, each to its limit
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stop_string_cuts_the_text(client):
    full = ask(client, QUESTIONS[1], max_tokens=24).choices[0].message.content
    stop = full[5:8]
    cut = ask(client, QUESTIONS[1], max_tokens=24, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in ask(client, QUESTIONS[1], max_tokens=24, stop=stop, stream=True)
        if c.choices
    )
    assert streamed == cut.message.content


def test_n_and_seed_repeat_and_differ(client):
    first = ask(client, QUESTIONS[4], max_tokens=12, temperature=1.0, seed=7, n=3)
    again = ask(client, QUESTIONS[4], max_tokens=12, temperature=1.0, seed=7, n=3)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1  # each choice samples with its own seed
    other = ask(client, QUESTIONS[4], max_tokens=12, temperature=1.0, seed=8)
    assert other.choices[0].message.content != texts[0]


def test_logprobs_are_the_models(client, run):
    import torch

    reply = ask(client, QUESTIONS[2], max_tokens=3, logprobs=True, top_logprobs=3).choices[0]
    prompt = run.tokenizer(
        generation_prompt(run.tokenizer, run.template, [{"role": "user", "content": QUESTIONS[2]}]),
        add_special_tokens=False,
    )["input_ids"]
    with torch.no_grad():
        first = torch.log_softmax(run.model(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)
    entry = reply.logprobs.content[0]
    assert len(reply.logprobs.content) == 3
    assert entry.logprob == pytest.approx(float(first.max()), abs=1e-4)
    assert [t.logprob for t in entry.top_logprobs] == pytest.approx(first.topk(3).values.tolist(), abs=1e-4)


def test_the_adapter_answers_differently(client):
    base = ask(client, QUESTIONS[0], max_tokens=12).choices[0].message.content
    tuned = ask(client, QUESTIONS[0], model="tuned", max_tokens=12)
    assert tuned.model == "tuned"
    assert tuned.choices[0].message.content != base


def test_text_completion_takes_the_raw_prompt(client, run):
    reply = client.completions.create(model="base", prompt="2 plus 3 is", max_tokens=5, temperature=0, logprobs=2)
    assert reply.usage.prompt_tokens == len(run.tokenizer("2 plus 3 is")["input_ids"])
    assert len(reply.choices[0].logprobs.tokens) == 5
    assert "".join(reply.choices[0].logprobs.tokens) == reply.choices[0].text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, 400, "top_p"),
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
        ({"model": "base", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400, "max_tokens"),
        ({"model": "base", "messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages"),
        ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "best_of": 2}, 400, "best_of"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ],
    ids=["n0", "temperature", "top_p0", "top_p>1", "model", "role", "max_tokens", "too-long", "unknown", "no-model"],
)
def test_bad_requests_get_the_error_object_and_the_server_goes_on(server, body, status, param):
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    assert server.health()["status"] == "ok"


def test_malformed_json_gets_400(server):
    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_eval_judges_with_lmforge_serve(server, client, tiny_model_dir, tmp_path):
    """`lmforge eval`'s judge tasks against this server: each verdict in the report is what the judge model
    answers to the judge's prompt (both orders for a pair), and every verdict is counted, rated or not."""
    from lmforge.evaluate.judge import pair_messages, single_messages

    from cli_runs import lmforge

    rows = [{"prompt": "What is 2 plus 2?", "reference": "4"}, {"prompt": "Name a colour.", "reference": "red"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"data: q.jsonl\njudge_model: tuned\nbase_url: {server.url}/v1\nmax_new_tokens: 8\njudge_max_tokens: 24\n"
    (tmp_path / "single.yaml").write_text(f"type: judge\nmode: single\n{common}")
    (tmp_path / "pair.yaml").write_text(f"type: judge\nmode: pairwise\n{common}")
    tasks = [str(tmp_path / "single.yaml"), str(tmp_path / "pair.yaml")]
    out = tmp_path / "report.json"
    done = lmforge("eval", str(tiny_model_dir), "--tasks", *tasks, "--out", str(out), "--samples", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())["tasks"]

    def judged(messages: list[dict]) -> str:
        answer = client.chat.completions.create(model="tuned", messages=messages, temperature=0, max_tokens=24)
        return answer.choices[0].message.content

    single = report["single"]
    assert single["counts"]["rows"] == 2
    assert single["counts"]["rated"] + single["counts"]["unparsed"] == 2
    for row, sample in zip(rows, single["samples"]):
        assert sample["verdict"] == judged(single_messages(row["prompt"], sample["reply"], row["reference"]))
    pair = report["pair"]
    assert pair["counts"]["pairs"] == 2
    for row, sample in zip(rows, pair["samples"]):
        ours, theirs = sample["reply"], sample["opponent"]
        assert theirs == row["reference"]
        assert sample["verdicts"] == [
            judged(pair_messages(row["prompt"], ours, theirs)),
            judged(pair_messages(row["prompt"], theirs, ours)),
        ]
