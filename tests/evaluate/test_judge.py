"""LLM-as-judge: reading verdicts, the position swap, the summaries (a plain Python judge), and a judge task run
against a small OpenAI-compatible HTTP endpoint served here (the real openai client talks to it)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmforge.cli import main
from lmforge.evaluate.judge import judge_pair, pair_summary, parse_choice, parse_rating, rating_summary


@pytest.mark.parametrize(
    "verdict, rating",
    [
        ("Good answer. Rating: [[7]]", 7.0),
        ("first [[3]] then, on reflection, [[8.5]]", 8.5),
        ("Rating: [[ 10 ]]", 10.0),
        ("Rating: [[11]]", None),
        ("Rating: [[0]]", None),
        ("Rating: 7/10", None),
        ("", None),
    ],
)
def test_parse_rating(verdict, rating):
    assert parse_rating(verdict) == rating


def test_parse_choice():
    assert parse_choice("A is better. [[A]]") == "A"
    assert parse_choice("[[A]] no wait: [[B]]") == "B"
    assert parse_choice("[[C]]") == "tie"
    assert parse_choice("A is better") is None


def judge_of(*verdicts: str):
    """A judge that answers these verdicts in turn, recording the answers it was shown as A."""
    shown: list[str] = []
    answers = iter(verdicts)

    def judge(messages: list[dict]) -> str:
        shown.append(re.search(r"\[Assistant A's answer\]\n(.*?)\n\n", messages[-1]["content"], re.S).group(1))
        return next(answers)

    return judge, shown


def test_both_orders_are_asked_and_only_a_consistent_pick_wins():
    judge, shown = judge_of("[[A]]", "[[B]]")  # ours first as A, then as B: both pick ours
    assert judge_pair(judge, "q", "ours", "theirs").outcome == "win"
    assert shown == ["ours", "theirs"]
    judge, _ = judge_of("[[B]]", "[[A]]")
    assert judge_pair(judge, "q", "ours", "theirs").outcome == "loss"
    judge, _ = judge_of("[[A]]", "[[A]]")  # always the first position: position bias, not a win
    outcome = judge_pair(judge, "q", "ours", "theirs")
    assert (outcome.outcome, outcome.inconsistent) == ("tie", True)
    judge, _ = judge_of("[[C]]", "[[C]]")
    outcome = judge_pair(judge, "q", "ours", "theirs")
    assert (outcome.outcome, outcome.inconsistent) == ("tie", False)
    judge, _ = judge_of("[[A]]", "no verdict")
    assert judge_pair(judge, "q", "ours", "theirs").outcome is None


def test_summaries_count_the_unparsed_apart():
    metrics, counts = rating_summary([8.0, None, 6.0])
    assert metrics == {"rating": 7.0} and counts == {"rows": 3, "rated": 2, "unparsed": 1}
    outcomes = []
    for verdicts in (("[[A]]", "[[B]]"), ("[[A]]", "[[A]]"), ("[[B]]", "[[A]]"), ("[[A]]", "[[B]]"), ("?", "[[A]]")):
        judge, _ = judge_of(*verdicts)
        outcomes.append(judge_pair(judge, "q", "ours", "theirs"))
    metrics, counts = pair_summary(outcomes)
    assert metrics == {"win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25}
    assert counts == {"pairs": 5, "judged": 4, "inconsistent": 1, "unparsed": 1}
    assert rating_summary([None])[0] == {"rating": None}


class _Judge(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: rates 7 for a single answer, always picks assistant A in a pair (a judge with a
    position bias), and never rates a single answer to a question holding 'unratable'."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        if "[Assistant A's answer]" in prompt:
            text = "[[A]]"
        else:
            text = "I cannot rate this." if "unratable" in prompt else "Fine. Rating: [[7]]"
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    pytest.importorskip("openai")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_judge_tasks_against_an_openai_compatible_endpoint(tiny_model_dir, tmp_path, judge_url):
    rows = [{"prompt": "What is 2 plus 2?", "reference": "4"}, {"prompt": "unratable question", "reference": "x"}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"data: q.jsonl\njudge_model: judge\nbase_url: {judge_url}\nmax_new_tokens: 4\n"
    (tmp_path / "single.yaml").write_text(f"type: judge\nmode: single\n{common}")
    (tmp_path / "pair.yaml").write_text(f"type: judge\nmode: pairwise\n{common}")
    out = tmp_path / "report.json"
    args = ["eval", str(tiny_model_dir), "--tasks", str(tmp_path / "single.yaml"), str(tmp_path / "pair.yaml")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--samples"]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    assert tasks["single"]["metrics"] == {"rating": 7.0}
    assert tasks["single"]["counts"] == {"rows": 2, "rated": 1, "unparsed": 1}
    pair = tasks["pair"]
    assert pair["metrics"] == {"win_rate": 0.0, "tie_rate": 1.0, "loss_rate": 0.0}  # position bias: ties
    assert pair["counts"] == {"pairs": 2, "judged": 2, "inconsistent": 2, "unparsed": 0}
    assert [s["opponent"] for s in pair["samples"]] == ["4", "x"]  # against the references


def test_an_unreachable_judge_is_named(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "j.yaml").write_text(
        "type: judge\ndata: q.jsonl\njudge_model: m\nmax_new_tokens: 2\nbase_url: http://127.0.0.1:9/v1\n"
    )
    assert main(["eval", str(tiny_model_dir), "--tasks", str(tmp_path / "j.yaml"), "--device", "cpu"]) == 2
    assert "cannot reach the judge at http://127.0.0.1:9/v1" in capsys.readouterr().err
