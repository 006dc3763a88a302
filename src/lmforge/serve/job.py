"""One API request on its model's engine: its prompts tokenised and checked against the model's context, its
sequences (n per prompt, each with its own seed), and their events carried from the engine's thread to the
event loop. Leaving `events` early (a client gone) cancels every sequence, which frees their places."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from lmforge.serve.engine import QueueFull
from lmforge.serve.errors import ApiError, bad_request
from lmforge.serve.models import Served
from lmforge.serve.protocol import Generation
from lmforge.serve.sequence import Event, Sequence, Settings

RETRY_AFTER_S = 1


def settings(served: Served, request: Generation, prompt: list[int], limit: int, top_logprobs: int | None) -> Settings:
    """The sampling settings of a request, its token budget checked against the model's context and `limit`."""
    room = served.context - len(prompt)
    if room <= 0:
        raise bad_request(
            f"the prompt is {len(prompt)} tokens; {served.name} takes at most {served.context - 1} (its context is "
            f"{served.context} tokens): shorten the messages",
            "messages",
            "context_length_exceeded",
        )
    asked = request.token_budget()
    param = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
    if asked is not None and asked > limit:
        raise bad_request(f"{param} {asked} is above this server's limit of {limit} tokens", param, "invalid_value")
    if asked is not None and asked > room:
        raise bad_request(
            f"{param} {asked} and the prompt's {len(prompt)} tokens exceed {served.name}'s context of "
            f"{served.context} tokens; ask for at most {room}",
            param,
            "context_length_exceeded",
        )
    return Settings(
        max_new_tokens=asked or min(limit, room),
        stop_ids=served.stop_ids,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=tuple(request.stop or ()),
        top_logprobs=top_logprobs,
    )


class Job:
    def __init__(self, served: Served, prompts: list[list[int]], base: Settings, n: int):
        self.served, self.prompts = served, prompts
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.sequences = [
            Sequence(prompt, _seeded(base, j), served.tokenizer, _listener(loop, self.queue, i * n + j))
            for i, prompt in enumerate(prompts)
            for j in range(n)
        ]

    def submit(self) -> None:
        try:
            self.served.engine.submit(self.sequences)
        except QueueFull:
            raise ApiError(
                503,
                f"{self.served.name} is busy: its queue is full; retry in {RETRY_AFTER_S} s",
                code="queue_full",
                kind="server_error",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """(choice index, event) until every sequence has ended; cancels what is left when the caller stops."""
        running = len(self.sequences)
        try:
            while running:
                index, event = await self.queue.get()
                running -= event.finish_reason is not None
                yield index, event
        finally:
            for seq in self.sequences:
                seq.cancel()

    def usage(self) -> dict[str, int]:
        """Each prompt counted once (its n choices share it), every generated token (stop tokens too)."""
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(s.generated for s in self.sequences)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _seeded(base: Settings, j: int) -> Settings:
    """Choice j of a seeded request samples with seed + j (so choices differ and a request repeats)."""
    if base.seed is None or j == 0:
        return base
    return replace(base, seed=base.seed + j)


def _listener(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int):
    def tell(event: Event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (index, event))

    return tell
