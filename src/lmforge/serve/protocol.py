"""The requests the server reads, checked at the edge (pydantic), in the shape of OpenAI's API.

Every parameter the server honours is a field here; an unknown one is refused (400) rather than ignored, so
that a client never believes a setting took effect when it did not. `checked` turns pydantic's errors into the
API's error object, naming the parameter.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmforge.serve.errors import ApiError, bad_request

MAX_N = 16
MAX_TOP_LOGPROBS = 20


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class Generation(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="forbid")

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("lmforge serve applies no penalties; expected 0 or leave it out")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("expected up to 4 non-empty strings")
        return stops or None


class ChatRequest(Generation):
    messages: list[Any] = Field(min_length=1)
    tools: list[Any] | None = None
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprob_count(self) -> int | None:
        """How many alternatives per token (None: no log-probabilities at all)."""
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Generation):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for text completions
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts or any(not p for p in prompts):
            raise ValueError("expected a non-empty string or a list of them")
        return prompts

    def token_budget(self) -> int | None:
        return self.max_tokens

    def logprob_count(self) -> int | None:
        return self.logprobs


Request = TypeVar("Request", bound=Generation)


def checked(kind: type[Request], body: Any) -> Request:
    """The request validated, or a 400 naming the first bad parameter."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return kind.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            raise ApiError(400, f"unrecognized request argument: {param}", param, "unsupported_parameter") from None
        if first["type"] == "missing":
            raise bad_request(f"missing required parameter: {param}", param, "missing_required_parameter") from None
        given = f" (got {first['input']!r})" if first["type"] != "value_error" or "input" in first else ""
        message = first["msg"].removeprefix("Value error, ")
        raise bad_request(f"{param}: {message}{given}", param, "invalid_value") from None
