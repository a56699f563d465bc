"""OpenAI-compatible routes: chat completions and models (completions and embeddings have their own modules)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf import adapters
from xinf.errors import InvalidRequest
from xinf.model import RunningModel
from xinf.schemas import ChatRequest, Sampling
from xinf.server import limits, vision
from xinf.server.http import decode, encode_json, json_response, read_body
from xinf.server.state import State, state
from xinf.server.streams import (
    Batch,
    Collected,
    chain,
    event_stream,
    first_and_rest,
    response_body,
    streamed,
    until_disconnect,
)
from xinf.toolcalls.choice import check_tools
from xinf.types import Chunk, GenerateRequest, TokenLogprob

log = logging.getLogger(__name__)


def keepalive(st: State, stream: bool) -> float | None:
    """Seconds between SSE pings for a streamed request (XINFERENCE_SSE_PING_ATTEMPTS_SECONDS)."""
    seconds = st.settings.sse_ping_seconds
    return seconds if stream and seconds > 0 else None


# ---------------------------------------------------------------- requests


_fingerprints: weakref.WeakKeyDictionary[RunningModel, str] = weakref.WeakKeyDictionary()


def fingerprint(st: State, model: RunningModel) -> str:
    """OpenAI's ``system_fingerprint``: changes when xinf, the engine plugin or the model's build changes."""
    known = _fingerprints.get(model)  # computed once per launched model: it is in every request's answer
    if known is None:
        known = _fingerprints[model] = _fingerprint(st, model)
    return known


def _fingerprint(st: State, model: RunningModel) -> str:
    from xinf import __version__

    info = st.plugins.engines.get(model.engine)
    spec = model.spec
    build = f"{__version__}|{model.engine}|{info.version if info else ''}|{spec.name}|{spec.format}|"
    build += f"{spec.size_in_billions}|{spec.quantization}"
    return "fp_" + hashlib.sha256(build.encode()).hexdigest()[:10]


def logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's ``{"token id": bias}``, checked: ids are integers, biases -100 to 100."""
    if not bias:
        return None
    bad = [k for k in bias if not k.strip().isdigit()]
    if bad:
        raise InvalidRequest(f"logit_bias keys must be token ids (integers); not {bad[:5]}", param="logit_bias")
    out = {int(k): float(v) for k, v in bias.items()}
    wild = [k for k, v in out.items() if not -100 <= v <= 100]
    if wild:
        raise InvalidRequest(f"logit_bias values must be -100 to 100; token ids {wild[:5]} are not", param="logit_bias")
    return out


def sampling_fields(req: Sampling, st: State, max_tokens: int | None) -> dict[str, Any]:
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")
    cap = st.settings.max_tokens
    if max_tokens is None:
        max_tokens = cap
    elif cap is not None and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens={max_tokens} is over this server's limit of {cap} (XINFERENCE_MAX_TOKENS)",
            param="max_tokens",
        )
    return {
        "logit_bias": logit_bias(req.logit_bias),
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
    check_tools(req.tools, req.tool_choice, model.uid, model.spec.abilities)
    # "none": the model may not call a tool, so it is not shown any (vLLM does the same).
    calls_allowed = bool(req.tools) and req.tool_choice != "none"
    return GenerateRequest(
        messages=messages,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        tools=req.tools if calls_allowed else None,
        tool_choice=req.tool_choice if calls_allowed else None,
        parallel_tool_calls=req.parallel_tool_calls,
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


# ---------------------------------------------------------------- chat


async def chat_completions(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), ChatRequest)
    model, adapter = adapters.lookup(st.manager, req.model, req.lora_name)
    limits.check_chat(req, model.spec.abilities, model.uid, st.settings)
    gen = chat_request(req, model, st)
    gen.messages = await vision.resolve(gen.messages, st.settings)  # image_url parts -> image bytes
    gen.adapter = adapter
    cid = f"chatcmpl-{secrets.token_hex(12)}"
    tracked = st.requests.start(model.uid, req.request_id or cid, gen.max_tokens, req.n)
    first, rest = await first_and_rest(st.requests.watch(tracked, model.batches(gen, req.n, keepalive(st, req.stream))))
    created = int(time.time())
    fp = fingerprint(st, model)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return streamed(chat_events(chain(first, rest), cid, created, req.model, req.n, include_usage, fp))
    body = await until_disconnect(request, chat_body(chain(first, rest), cid, created, req, model))
    return json_response({**body, "system_fingerprint": fp})


async def chat_body(stream: AsyncIterator[Batch], cid: str, created: int, req: ChatRequest, model: RunningModel) -> Any:
    got = await Collected([""] * req.n).read(stream)
    choices = []
    for i in range(req.n):
        message: dict[str, Any] = {"role": "assistant", "content": got.text(i)}
        if model.spec.is_reasoning:
            message["reasoning_content"] = "".join(got.thoughts[i]) or None
        if got.tool_calls[i]:
            message["tool_calls"] = got.calls(i)
            message["content"] = message["content"] or None  # as OpenAI: no text beside the calls is null
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
    stream: AsyncIterator[Batch], cid: str, created: int, model: str, n: int, include_usage: bool, fp: str
) -> AsyncIterator[bytes]:
    # A chunk of text alone (most of them) is written from bytes made once per choice, no dict in between.
    heads = [b'{"index":%d,"delta":{"content":' % i for i in range(n)]
    rest = b'},"logprobs":null,"finish_reason":null}'

    def choice(chunk: Chunk) -> bytes | None:
        if not (chunk.reasoning or chunk.tool_calls or chunk.logprobs):
            return b"".join((heads[chunk.index], encode_json(chunk.text), rest)) if chunk.text else None
        delta: dict[str, Any] = {}
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.tool_calls:
            delta["tool_calls"] = chunk.tool_calls
        out = _delta(chunk.index, delta)
        if chunk.logprobs:
            out["logprobs"] = chat_logprobs(chunk.logprobs)
        return encode_json(out)

    return event_stream(
        stream,
        {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": fp},
        total=n,
        n=n,
        include_usage=include_usage,
        opening=[_delta(i, {"role": "assistant", "content": ""}) for i in range(n)],
        choice=choice,
        closing=lambda i, finish: _delta(i, {}, finish),
    )


def _delta(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


# ---------------------------------------------------------------- models


async def list_models(request: Request) -> Response:
    st = state(request)
    data = [m.describe() for m in st.manager.models.values()] + adapters.listed(st.manager)
    return json_response({"object": "list", "data": data})
