"""OpenAI-compatible routes: chat completions, completions, embeddings, models."""

from __future__ import annotations

import base64
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf import adapters
from xinf.errors import InvalidRequest
from xinf.model import RunningModel
from xinf.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, Sampling
from xinf.server.http import decode, json_response, read_body
from xinf.server.state import State, state
from xinf.server.streams import (
    Collected,
    chain,
    event_stream,
    first_and_rest,
    merged,
    response_body,
    streamed,
    until_disconnect,
)
from xinf.types import Chunk, EmbedRequest, GenerateRequest, TokenLogprob

log = logging.getLogger(__name__)


def keepalive(st: State, stream: bool) -> float | None:
    """Seconds between SSE pings for a streamed request (XINFERENCE_SSE_PING_ATTEMPTS_SECONDS)."""
    seconds = st.settings.sse_ping_seconds
    return seconds if stream and seconds > 0 else None


# ---------------------------------------------------------------- requests


def sampling_fields(req: Sampling, st: State, max_tokens: int | None) -> dict[str, Any]:
    cap = st.settings.max_tokens
    if max_tokens is None:
        max_tokens = cap
    elif cap is not None and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens={max_tokens} is over this server's limit of {cap} (XINFERENCE_MAX_TOKENS)",
            param="max_tokens",
        )
    if req.logit_bias:
        raise InvalidRequest("logit_bias is not supported", param="logit_bias", code="unsupported_parameter")
    return {
        "max_tokens": max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "repetition_penalty": req.repetition_penalty,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "stop": req.stops,
        "seed": req.seed,
        "ignore_eos": req.ignore_eos,
    }


def chat_request(req: ChatRequest, model: RunningModel, st: State) -> GenerateRequest:
    if "chat" not in model.spec.abilities:
        raise InvalidRequest(
            f"model {model.uid!r} cannot chat (abilities: {', '.join(model.spec.abilities)}); "
            "use /v1/completions or /v1/embeddings",
            param="model",
        )
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs=true", param="top_logprobs")
    kwargs = dict(req.chat_template_kwargs or {})
    if req.enable_thinking is not None:
        kwargs["enable_thinking"] = req.enable_thinking
    elif "enable_thinking" not in kwargs and model.request.enable_thinking is not None:
        kwargs["enable_thinking"] = model.request.enable_thinking
    messages = [_message(m) for m in req.messages]
    return GenerateRequest(
        messages=messages,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        tools=req.tools,
        tool_choice=req.tool_choice,
        response_format=req.response_format,
        chat_template_kwargs=kwargs,
        **sampling_fields(req, st, req.max_completion_tokens or req.max_tokens),
    )


def _message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    for field in ("content", "name", "tool_calls", "tool_call_id", "reasoning_content"):
        value = getattr(message, field)
        if value is not None:
            out[field] = value
    if "content" not in out and message.role != "assistant":
        raise InvalidRequest(f"a {message.role} message needs content", param="messages")
    return out


def completion_request(req: CompletionRequest, prompt: str, model: RunningModel, st: State) -> GenerateRequest:
    if "generate" not in model.spec.abilities:
        raise InvalidRequest(f"model {model.uid!r} cannot complete text", param="model")
    if req.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix", code="unsupported_parameter")
    return GenerateRequest(prompt=prompt, logprobs=req.logprobs, **sampling_fields(req, st, req.max_tokens or 16))


# ---------------------------------------------------------------- logprobs


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.token.encode()),
                "top_logprobs": [{"token": s, "logprob": lp, "bytes": list(s.encode())} for s, lp in t.top_logprobs],
            }
            for t in items
        ]
    }


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [dict(t.top_logprobs) for t in items],
        "text_offset": offsets,
    }


# ---------------------------------------------------------------- chat


async def chat_completions(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), ChatRequest)
    model, adapter = adapters.lookup(st.manager, req.model, req.lora_name)
    gen = chat_request(req, model, st)
    gen.adapter = adapter
    first, rest = await first_and_rest(model.generate(gen, req.n, keepalive(st, req.stream)))
    cid = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return streamed(chat_events(chain(first, rest), cid, created, req.model, req.n, include_usage))
    return json_response(await until_disconnect(request, chat_body(chain(first, rest), cid, created, req, model)))


async def chat_body(stream: AsyncIterator[Chunk], cid: str, created: int, req: ChatRequest, model: RunningModel) -> Any:
    got = await Collected([""] * req.n).read(stream)
    choices = []
    for i in range(req.n):
        message: dict[str, Any] = {"role": "assistant", "content": got.text(i)}
        if model.spec.is_reasoning:
            message["reasoning_content"] = "".join(got.thoughts[i]) or None
        if got.tool_calls[i]:
            message["tool_calls"] = got.tool_calls[i]
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": chat_logprobs(got.logprobs[i]) if req.logprobs else None,
                "finish_reason": got.finish_reason(i),
            }
        )
    return response_body("chat.completion", cid, created, req.model, choices, got.usage.as_dict(req.n))


def chat_events(
    stream: AsyncIterator[Chunk], cid: str, created: int, model: str, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    def choice(chunk: Chunk) -> dict[str, Any] | None:
        delta: dict[str, Any] = {}
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.tool_calls:
            delta["tool_calls"] = chunk.tool_calls
        if not delta and not chunk.logprobs:
            return None
        out = _delta(chunk.index, delta)
        if chunk.logprobs:
            out["logprobs"] = chat_logprobs(chunk.logprobs)
        return out

    return event_stream(
        stream,
        {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model},
        total=n,
        n=n,
        include_usage=include_usage,
        opening=[_delta(i, {"role": "assistant", "content": ""}) for i in range(n)],
        choice=choice,
        closing=lambda i, finish: _delta(i, {}, finish),
    )


def _delta(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


# ---------------------------------------------------------------- completions


async def completions(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), CompletionRequest)
    model, adapter = adapters.lookup(st.manager, req.model, req.lora_name)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    gens = [completion_request(req, prompt, model, st) for prompt in prompts]
    for gen in gens:
        gen.adapter = adapter
    pings = keepalive(st, req.stream)
    first, rest = await first_and_rest(merged([model.generate(g, req.n, pings) for g in gens], req.n))
    cid = f"cmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    total = len(prompts) * req.n
    echoes = [prompts[i // req.n] if req.echo else "" for i in range(total)]
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return streamed(completion_events(chain(first, rest), cid, created, req.model, req.n, echoes, include_usage))
    body = completion_body(chain(first, rest), cid, created, req, echoes)
    return json_response(await until_disconnect(request, body))


async def completion_body(
    stream: AsyncIterator[Chunk], cid: str, created: int, req: CompletionRequest, echoes: list[str]
) -> Any:
    got = await Collected(echoes).read(stream)
    choices = [
        {
            "index": i,
            "text": got.text(i),
            "logprobs": completion_logprobs(got.logprobs[i], len(echoes[i])) if req.logprobs is not None else None,
            "finish_reason": got.finish_reason(i),
        }
        for i in range(len(echoes))
    ]
    return response_body("text_completion", cid, created, req.model, choices, got.usage.as_dict(req.n))


def completion_events(
    stream: AsyncIterator[Chunk],
    cid: str,
    created: int,
    model: str,
    n: int,
    echoes: list[str],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """``echoes[i]`` is choice i's echoed prompt ("" without echo); there are ``len(echoes)`` choices."""

    def choice(chunk: Chunk) -> dict[str, Any] | None:
        if not chunk.text and not chunk.logprobs:
            return None
        out = _text(chunk.index, chunk.text)
        if chunk.logprobs:
            out["logprobs"] = completion_logprobs(chunk.logprobs, 0)
        return out

    return event_stream(
        stream,
        {"id": cid, "object": "text_completion", "created": created, "model": model},
        total=len(echoes),
        n=n,
        include_usage=include_usage,
        opening=[_text(i, echo) for i, echo in enumerate(echoes) if echo],
        choice=choice,
        closing=lambda i, finish: _text(i, "", finish),
    )


def _text(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


# ---------------------------------------------------------------- embeddings


async def embeddings(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), EmbeddingRequest)
    model = st.manager.get(req.model)
    if "embed" not in model.spec.abilities:
        raise InvalidRequest(f"model {model.uid!r} is not an embedding model", param="model")
    inputs = [req.input] if isinstance(req.input, str) else list(req.input)
    if any(not text for text in inputs):
        raise InvalidRequest("input must not contain empty strings", param="input")
    result = await until_disconnect(request, model.embed(EmbedRequest(input=inputs, dimensions=req.dimensions)))
    data = []
    for i, vector in enumerate(result.embeddings):
        value: Any = vector
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


# ---------------------------------------------------------------- models


async def list_models(request: Request) -> Response:
    st = state(request)
    data = [m.describe() for m in st.manager.models.values()] + adapters.listed(st.manager)
    return json_response({"object": "list", "data": data})
