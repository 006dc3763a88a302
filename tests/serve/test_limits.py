"""`lmforge serve` with an API key, one sequence at a time and a queue of one: auth, a full queue, a client that
leaves mid-stream, and a port already in use."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from cli_runs import lmforge

KEY = "sk-test-key"
LONG = {"model": "tiny", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 100, "temperature": 0}


@pytest.fixture(scope="module")
def server(start_server, tiny_model_dir):
    live = start_server(str(tiny_model_dir), "--name", "tiny", "--api-key", KEY, "--max-batch", "1", "--max-queue", "1")
    yield live
    live.stop()


def post(server, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def wait_idle(server) -> dict:
    deadline = time.monotonic() + 60
    while (health := server.health())["active"] or health["waiting"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    return health


def test_a_request_without_the_key_gets_401(server):
    short = {**LONG, "max_tokens": 2}
    for key in (None, "sk-wrong"):
        response = post(server, short, key)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert post(server, short).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200  # open without the key


def test_a_full_queue_answers_503_with_retry_after(server):
    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: post(server, LONG), range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses  # one runs, one waits, the rest are turned away
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["code"] == "queue_full"
    assert wait_idle(server)["status"] == "ok"


def test_a_client_leaving_mid_stream_frees_its_place(server):
    dropped = server.health()["models"]["tiny"]["dropped"]
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json={**LONG, "stream": True}, headers=headers, timeout=60
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        next(lines)
    health = wait_idle(server)
    assert health["models"]["tiny"]["dropped"] == dropped + 1  # the engine dropped it, it did not run to its end
    assert post(server, {**LONG, "max_tokens": 3}).json()["usage"]["completion_tokens"] == 3


def test_a_port_in_use_is_a_clear_error(server, tiny_model_dir, tmp_path):
    result = lmforge("serve", str(tiny_model_dir), "--port", str(server.port), cwd=tmp_path)
    assert result.returncode == 2
    assert f"--port {server.port}: the port is already in use" in result.stderr
    assert "Traceback" not in result.stderr
