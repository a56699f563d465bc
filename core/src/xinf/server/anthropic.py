"""The Anthropic Messages API: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Requests are translated (``anthropic_schema``) into the same ``GenerateRequest``
the OpenAI routes make, so every engine serves both.  The engine's chunks
become Anthropic content blocks: ``thinking`` (a reasoning model's thoughts),
``text`` and ``tool_use``; streamed, as Anthropic's events.  Errors are
Anthropic-shaped: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf.errors import InvalidRequest, XinfError
from xinf.model import RunningModel
from xinf.replica.handle import KEEPALIVE
from xinf.server import limits, vision
from xinf.server.anthropic_schema import CountTokensRequest, MessagesRequest, generate_request
from xinf.server.http import decode, encode_json, json_response, read_body
from xinf.server.openai import keepalive
from xinf.server.state import State, state
from xinf.server.streams import chain, first_and_rest, streamed, until_disconnect
from xinf.toolcalls.choice import check_tools
from xinf.types import Chunk

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def anthropic_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer this route's errors in Anthropic's shape instead of OpenAI's."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except XinfError as exc:
            message = f"{exc.param}: {exc.message}" if exc.param and exc.param not in exc.message else exc.message
            headers = {}
            if getattr(exc, "retry_after", None) is not None:
                headers["retry-after"] = str(exc.retry_after)  # type: ignore[attr-defined]
            return json_response(error_body(exc.status, message), exc.status, headers)

    return wrapped


def chat_model(st: State, name: str) -> RunningModel:
    model = st.manager.get(name)
    if "chat" not in model.spec.abilities:
        raise InvalidRequest(f"model {model.uid!r} cannot chat", param="model")
    return model


def _check(req: MessagesRequest | CountTokensRequest, model: RunningModel, st: State) -> Any:
    gen = generate_request(req, getattr(req, "max_tokens", 1))
    for n, message in enumerate(gen.messages or []):
        if isinstance(message.get("content"), list):  # the OpenAI routes' check of content parts (images...)
            limits.check_parts(
                message["content"], f"messages.{n}.content", model.spec.abilities, model.uid, st.settings
            )
    check_tools(gen.tools, gen.tool_choice, model.uid, model.spec.abilities)
    if "enable_thinking" in gen.chat_template_kwargs and not model.spec.is_reasoning:
        gen.chat_template_kwargs.pop("enable_thinking")  # thinking only changes reasoning models
    elif "enable_thinking" not in gen.chat_template_kwargs and model.request.enable_thinking is not None:
        gen.chat_template_kwargs["enable_thinking"] = model.request.enable_thinking
    return gen


@anthropic_errors
async def messages(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), MessagesRequest)
    model = chat_model(st, req.model)
    gen = _check(req, model, st)
    gen.messages = await vision.resolve(gen.messages, st.settings)
    cap = st.settings.max_tokens
    if cap is not None and req.max_tokens > cap:
        raise InvalidRequest(f"max_tokens {req.max_tokens} is over this server's limit of {cap}", param="max_tokens")
    first, rest = await first_and_rest(model.generate(gen, 1, keepalive(st, req.stream)))
    mid = f"msg_{secrets.token_hex(12)}"
    if req.stream:
        return streamed(stream_events(chain(first, rest), mid, req.model))
    return json_response(await until_disconnect(request, message_body(chain(first, rest), mid, req.model)))


@anthropic_errors
async def count_tokens(request: Request) -> Response:
    """The prompt's tokens, as the model's template and tokenizer make them (one token is generated)."""
    st = state(request)
    req = decode(await read_body(request, st.max_body), CountTokensRequest)
    model = chat_model(st, req.model)
    gen = _check(req, model, st)
    gen.messages = await vision.resolve(gen.messages, st.settings)
    gen.max_tokens = 1
    gen.tool_choice = None  # the tools count, but nothing is forced
    prompt_tokens = 0
    async for chunk in model.generate(gen, 1):
        if chunk is not KEEPALIVE and chunk.usage is not None:
            prompt_tokens = chunk.usage.prompt_tokens
    return json_response({"input_tokens": prompt_tokens})


class Blocks:
    """Turns chunks into Anthropic stream events, opening a new content block when the kind changes."""

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None
        self.calls: dict[int, int] = {}  # tool call index -> block index
        self.finish = "stop"
        self.input_tokens = 0
        self.output_tokens = 0

    def feed(self, chunk: Chunk) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.reasoning:
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, events)
            events.append(self._delta({"type": "thinking_delta", "thinking": chunk.reasoning}))
        if chunk.text:
            self._open("text", {"type": "text", "text": ""}, events)
            events.append(self._delta({"type": "text_delta", "text": chunk.text}))
        for call in chunk.tool_calls or []:
            function = call.get("function") or {}
            if call.get("id") or call.get("index") not in self.calls:
                block = {"type": "tool_use", "id": call.get("id") or f"toolu_{secrets.token_hex(12)}"}
                block.update(name=function.get("name") or "", input={})
                self._open("tool_use", block, events, force=True)
                self.calls[call.get("index", len(self.calls))] = self.index
            if function.get("arguments"):
                events.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
        if chunk.finish_reason:
            self.finish = chunk.finish_reason
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        return events

    def close(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        self._stop(events)
        return events

    @property
    def stop_reason(self) -> str:
        return STOP_REASONS.get(self.finish, "end_turn")

    def _open(self, kind: str, block: dict[str, Any], events: list[dict[str, Any]], force: bool = False) -> None:
        if self.kind == kind and not force:
            return
        self._stop(events)
        self.index += 1
        self.kind = kind
        events.append({"type": "content_block_start", "index": self.index, "content_block": block})

    def _stop(self, events: list[dict[str, Any]]) -> None:
        if self.kind is not None:
            events.append({"type": "content_block_stop", "index": self.index})
            self.kind = None

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}


def _message(mid: str, model: str) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


async def message_body(stream: AsyncIterator[Chunk], mid: str, model: str) -> dict[str, Any]:
    blocks = Blocks()
    events: list[dict[str, Any]] = []
    async for chunk in stream:
        if chunk is not KEEPALIVE:
            events += blocks.feed(chunk)
    events += blocks.close()
    content: list[dict[str, Any]] = []
    partial: dict[int, list[str]] = {}
    for event in events:
        if event["type"] == "content_block_start":
            content.append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            block, delta = content[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                partial.setdefault(event["index"], []).append(delta["partial_json"])
    for index, pieces in partial.items():
        content[index]["input"] = _json_object("".join(pieces))
    body = _message(mid, model)
    body.update(content=content, stop_reason=blocks.stop_reason)
    body["usage"] = {"input_tokens": blocks.input_tokens, "output_tokens": blocks.output_tokens}
    return body


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def event(data: dict[str, Any]) -> bytes:
    kind = str(data["type"]).encode()
    return b"event: " + kind + b"\ndata: " + encode_json(data) + b"\n\n"


async def stream_events(stream: AsyncIterator[Chunk], mid: str, model: str) -> AsyncIterator[bytes]:
    blocks = Blocks()
    yield event({"type": "message_start", "message": _message(mid, model)})
    try:
        async for chunk in stream:
            if chunk is KEEPALIVE:
                yield event({"type": "ping"})
                continue
            for item in blocks.feed(chunk):
                yield event(item)
        for item in blocks.close():
            yield event(item)
        usage = {"input_tokens": blocks.input_tokens, "output_tokens": blocks.output_tokens}
        delta = {"stop_reason": blocks.stop_reason, "stop_sequence": None}
        yield event({"type": "message_delta", "delta": delta, "usage": usage})
        yield event({"type": "message_stop"})
    except Exception as exc:
        if isinstance(exc, XinfError):
            yield event(error_body(exc.status, exc.message))
        else:
            log.exception("stream %s failed", mid, exc_info=exc)
            yield event(error_body(500, f"internal error: {exc}"))
