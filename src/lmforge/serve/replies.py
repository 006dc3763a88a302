"""The response objects, in OpenAI's shapes: chat completions and their stream chunks, text completions,
log-probabilities (chat's `content` list, completions' parallel lists), and tool calls read from a reply."""

from __future__ import annotations

import time
import uuid
from typing import Any

from lmforge.serve.models import Served
from lmforge.serve.sequence import Sequence, TokenLogprob


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def envelope(kind: str, ident: str, model: str) -> dict[str, Any]:
    return {"id": ident, "object": kind, "created": int(time.time()), "model": model}


def chat_logprobs(served: Served, entries: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                **_token(served, e.token_id, e.logprob),
                "top_logprobs": [_token(served, token, value) for token, value in e.top],
            }
            for e in entries
        ]
    }


def completion_logprobs(served: Served, entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    tokens = [served.tokenizer.decode([e.token_id]) for e in entries]
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{served.tokenizer.decode([t]): v for t, v in e.top} for e in entries],
        "text_offset": offsets,
    }


def _token(served: Served, token_id: int, logprob: float) -> dict[str, Any]:
    text = served.tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_message(served: Served, seq: Sequence, offered_tools: bool) -> tuple[dict[str, Any], str]:
    """(the assistant message, its finish reason): tool calls where tools were offered, the template has a tool
    format and the reply is written in it; else the text."""
    if offered_tools and served.tools is not None and seq.finish_reason == "stop":
        found = served.tools.parse(served.tokenizer.decode(seq.ids, skip_special_tokens=False))
        if found is not None:
            content, calls = found
            return {"role": "assistant", "content": content or None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": seq.text}, seq.finish_reason or "stop"
