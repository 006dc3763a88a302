"""The HTTP routes: /v1/models, /v1/chat/completions (plain and streamed), /v1/completions, /health.

A chat prompt is `generation_prompt(tokenizer, template, messages, tools)` with the template the model trained
with, tokenised without added special tokens (the template writes them); a text completion's prompt is the raw
text, tokenised as the tokenizer does by default (its BOS where it has one). Messages and tool schemas are read
by the same parsers as training data, so a request is refused exactly where training data would be.
Every error is OpenAI's error object; nothing a client sends takes the server down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmforge.console import say
from lmforge.data.chat.masks import generation_prompt
from lmforge.data.sources.messages import parse_message, parse_tools
from lmforge.data.sources.problems import RecordProblem
from lmforge.errors import LmforgeError
from lmforge.serve import replies
from lmforge.serve.errors import ApiError, bad_request, server_error
from lmforge.serve.job import Job, settings
from lmforge.serve.models import Served
from lmforge.serve.protocol import ChatRequest, CompletionRequest, checked


def build_app(models: dict[str, Served], api_key: str | None, max_new_tokens: int) -> FastAPI:
    app = FastAPI(title="lmforge serve", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def authorise(request: Request, call_next):
        if api_key and request.url.path != "/health":
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return ApiError(
                    401, "a valid API key is needed: send the header Authorization: Bearer KEY", code="invalid_api_key"
                ).response()
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return ApiError(
            err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None
        ).response()

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        say(f"lmforge serve: a request failed: {type(err).__name__}: {err}")
        return server_error(f"the server failed on this request: {type(err).__name__}: {err}").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = {name: served.engine.stats() for name, served in models.items()}
        return {
            "status": "ok",
            "active": sum(s["active"] for s in stats.values()),
            "waiting": sum(s["waiting"] for s in stats.values()),
            "models": stats,
        }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": s.name, "object": "model", "created": s.created, "owned_by": "lmforge"} for s in models.values()]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = checked(ChatRequest, await _json(request))
        served = _model(models, body.model)
        tools = _tools(body)
        prompt = _chat_prompt(served, body, tools)
        job = Job(served, [prompt], settings(served, body, prompt, max_new_tokens, body.logprob_count()), body.n)
        job.submit()
        if body.stream:
            return _sse(_chat_stream(served, job, body, tools is not None))
        return await _chat_reply(served, job, body, tools is not None)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = checked(CompletionRequest, await _json(request))
        served = _model(models, body.model)
        prompts = [served.tokenizer(text)["input_ids"] for text in body.prompt]
        longest = max(prompts, key=len)
        job = Job(served, prompts, settings(served, body, longest, max_new_tokens, body.logprob_count()), body.n)
        job.submit()
        if body.stream:
            return _sse(_completion_stream(served, job, body))
        return await _completion_reply(served, job, body)

    return app


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON: {err}") from None


def _model(models: dict[str, Served], name: str) -> Served:
    if name not in models:
        raise ApiError(
            404,
            f"the model {name!r} does not exist here; this server has: {', '.join(models)}",
            "model",
            "model_not_found",
        )
    return models[name]


def _tools(body: ChatRequest) -> list[dict] | None:
    if body.tool_choice == "none" or not body.tools:
        return None
    try:
        return parse_tools(body.tools, "tools")
    except RecordProblem as err:
        raise bad_request(str(err), "tools") from None


def _chat_prompt(served: Served, body: ChatRequest, tools: list[dict] | None) -> list[int]:
    try:
        messages = [parse_message(m, f"messages[{i}]").as_dict() for i, m in enumerate(body.messages)]
        text = generation_prompt(served.tokenizer, served.template, messages, tools)
    except RecordProblem as err:
        raise bad_request(str(err), "messages") from None
    except LmforgeError as err:
        raise bad_request(str(err).removeprefix("chat: "), "tools" if tools else "messages") from None
    return served.tokenizer(text, add_special_tokens=False)["input_ids"]


async def _chat_reply(served: Served, job: Job, body: ChatRequest, offered_tools: bool) -> dict[str, Any]:
    logprobs: dict[int, list] = {i: [] for i in range(len(job.sequences))}
    async for index, event in job.events():
        if event.error:
            raise server_error(event.error)
        logprobs[index] += event.logprobs
    choices = []
    for i, seq in enumerate(job.sequences):
        message, finish = replies.chat_message(served, seq, offered_tools)
        lp = replies.chat_logprobs(served, logprobs[i]) if body.logprobs else None
        choices.append({"index": i, "message": message, "logprobs": lp, "finish_reason": finish})
    reply = replies.envelope("chat.completion", replies.new_id("chatcmpl"), served.name)
    return {**reply, "choices": choices, "usage": job.usage()}


async def _chat_stream(served: Served, job: Job, body: ChatRequest, offered_tools: bool) -> AsyncIterator[dict]:
    """Chunks as the text comes; where tools are offered and the template has a tool format, each choice's reply
    is sent whole at its end (as tool calls or as text), since it is a call or not only once it is complete."""
    head = replies.envelope("chat.completion.chunk", replies.new_id("chatcmpl"), served.name)
    buffered = offered_tools and served.tools is not None
    for i in range(len(job.sequences)):
        yield {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    async for index, event in job.events():
        if event.error:
            yield server_error(event.error).body()
            return
        choice: dict[str, Any] = {"index": index, "delta": {}, "logprobs": None, "finish_reason": None}
        if not buffered and event.text:
            choice["delta"] = {"content": event.text}
        if body.logprobs and event.logprobs:
            choice["logprobs"] = replies.chat_logprobs(served, event.logprobs)
        if event.finish_reason:
            if buffered:
                message, choice["finish_reason"] = replies.chat_message(served, job.sequences[index], True)
                choice["delta"] = {k: v for k, v in message.items() if k != "role" and v is not None}
                for n, call in enumerate(choice["delta"].get("tool_calls", [])):
                    call["index"] = n
            else:
                choice["finish_reason"] = event.finish_reason
        if choice["delta"] or choice["logprobs"] or choice["finish_reason"]:
            yield {**head, "choices": [choice]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**head, "choices": [], "usage": job.usage()}


async def _completion_reply(served: Served, job: Job, body: CompletionRequest) -> dict[str, Any]:
    logprobs: dict[int, list] = {i: [] for i in range(len(job.sequences))}
    async for index, event in job.events():
        if event.error:
            raise server_error(event.error)
        logprobs[index] += event.logprobs
    choices = [
        {
            "index": i,
            "text": seq.text,
            "logprobs": replies.completion_logprobs(served, logprobs[i]) if body.logprobs is not None else None,
            "finish_reason": seq.finish_reason,
        }
        for i, seq in enumerate(job.sequences)
    ]
    reply = replies.envelope("text_completion", replies.new_id("cmpl"), served.name)
    return {**reply, "choices": choices, "usage": job.usage()}


async def _completion_stream(served: Served, job: Job, body: CompletionRequest) -> AsyncIterator[dict]:
    head = replies.envelope("text_completion", replies.new_id("cmpl"), served.name)
    offsets = [0] * len(job.sequences)
    async for index, event in job.events():
        if event.error:
            yield server_error(event.error).body()
            return
        lp = None
        if body.logprobs is not None:
            lp = replies.completion_logprobs(served, event.logprobs, offsets[index])
        offsets[index] += len(event.text)
        choice = {"index": index, "text": event.text, "logprobs": lp, "finish_reason": event.finish_reason}
        yield {**head, "choices": [choice]}
    if body.stream_options and body.stream_options.include_usage:
        yield {**head, "choices": [], "usage": job.usage()}


def _sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
