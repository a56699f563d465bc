"""OpenAI-compatible routes: chat completions, completions, embeddings, models."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from xinf import adapters
from xinf.engine import Chunk, EmbedRequest, GenerateRequest, TokenLogprob
from xinf.errors import InvalidRequest, XinfError
from xinf.model import RunningModel
from xinf.replica.handle import KEEPALIVE
from xinf.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, Sampling
from xinf.server.http import decode, encode_json, json_response, read_body
from xinf.server.state import State

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"  # an SSE comment: clients ignore it, proxies see the connection is alive


def state(request: Request) -> State:
    return request.app.state.xinf  # type: ignore[no-any-return]


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


# ---------------------------------------------------------------- streams


async def first_and_rest(stream: AsyncIterator[Chunk]) -> tuple[Chunk | None, AsyncIterator[Chunk]]:
    """Wait for the first chunk, so that errors before any output get a proper status."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        return None, stream
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    return first, stream


async def chain(first: Chunk | None, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


async def merged(streams: list[AsyncIterator[Chunk]], n: int) -> AsyncIterator[Chunk]:
    """Several prompts' streams as one, choice indexes offset by prompt."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield chunk
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                if chunk is not KEEPALIVE:
                    chunk.index += i * n
                queue.put_nowait(chunk)
        except BaseException as exc:
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(done)

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


async def until_disconnect(request: Request, work: Any) -> Any:
    """Run ``work`` but cancel it if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise asyncio.CancelledError("client disconnected")
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


DONE = b"data: [DONE]\n\n"


def stream_error(cid: str, exc: Exception) -> bytes:
    """The SSE event that ends a stream which failed after its 200 was sent."""
    if isinstance(exc, XinfError):
        return sse({"error": exc.to_dict()})
    log.exception("stream %s failed", cid, exc_info=exc)
    return sse({"error": {"message": f"internal error: {exc}", "type": "server_error", "param": None, "code": None}})


def sse(data: Any) -> bytes:
    return b"data: " + encode_json(data) + b"\n\n"


class Usage:
    def __init__(self) -> None:
        self.prompt_tokens: dict[int, int] = {}
        self.completion_tokens = 0

    def add(self, chunk: Chunk) -> None:
        if chunk.usage is not None:
            self.prompt_tokens[chunk.index] = chunk.usage.prompt_tokens
            self.completion_tokens += chunk.usage.completion_tokens

    def as_dict(self, n: int) -> dict[str, int]:
        # n choices of one prompt share its prompt tokens: count each prompt once.
        by_prompt: dict[int, int] = {}
        for index, tokens in self.prompt_tokens.items():
            by_prompt[index // n] = tokens
        prompt = sum(by_prompt.values())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt + self.completion_tokens,
        }


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
        events = chat_events(chain(first, rest), cid, created, req.model, req.n, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return json_response(await until_disconnect(request, chat_body(chain(first, rest), cid, created, req, model)))


async def chat_body(stream: AsyncIterator[Chunk], cid: str, created: int, req: ChatRequest, model: RunningModel) -> Any:
    texts: list[list[str]] = [[] for _ in range(req.n)]
    thoughts: list[list[str]] = [[] for _ in range(req.n)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(req.n)]
    tools: list[list[dict[str, Any]]] = [[] for _ in range(req.n)]
    finish: list[str | None] = [None] * req.n
    usage = Usage()
    async for chunk in stream:
        i = chunk.index
        texts[i].append(chunk.text)
        if chunk.reasoning:
            thoughts[i].append(chunk.reasoning)
        if chunk.logprobs:
            logprobs[i].extend(chunk.logprobs)
        if chunk.tool_calls:
            tools[i].extend(chunk.tool_calls)
        if chunk.finish_reason:
            finish[i] = chunk.finish_reason
        usage.add(chunk)
    choices = []
    for i in range(req.n):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts[i])}
        if model.spec.is_reasoning:
            message["reasoning_content"] = "".join(thoughts[i]) or None
        if tools[i]:
            message["tool_calls"] = tools[i]
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": chat_logprobs(logprobs[i]) if req.logprobs else None,
                "finish_reason": finish[i] or "stop",
            }
        )
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": choices,
        "usage": usage.as_dict(req.n),
    }


async def chat_events(
    stream: AsyncIterator[Chunk], cid: str, created: int, model: str, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if include_usage:
        base["usage"] = None
    finish: list[str | None] = [None] * n
    usage = Usage()
    try:
        for i in range(n):
            yield sse({**base, "choices": [_choice(i, {"role": "assistant", "content": ""})]})
        async for chunk in stream:
            if chunk is KEEPALIVE:
                yield PING
                continue
            delta: dict[str, Any] = {}
            if chunk.reasoning:
                delta["reasoning_content"] = chunk.reasoning
            if chunk.text:
                delta["content"] = chunk.text
            if chunk.tool_calls:
                delta["tool_calls"] = chunk.tool_calls
            if delta or chunk.logprobs:
                choice = _choice(chunk.index, delta)
                if chunk.logprobs:
                    choice["logprobs"] = chat_logprobs(chunk.logprobs)
                yield sse({**base, "choices": [choice]})
            if chunk.finish_reason:
                finish[chunk.index] = chunk.finish_reason
            usage.add(chunk)
        for i in range(n):
            yield sse({**base, "choices": [_choice(i, {}, finish[i] or "stop")]})
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage.as_dict(n)})
    except Exception as exc:
        yield stream_error(cid, exc)
    yield DONE


def _choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
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
        events = completion_events(chain(first, rest), cid, created, req.model, total, req.n, echoes, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    body = completion_body(chain(first, rest), cid, created, req, total, echoes)
    return json_response(await until_disconnect(request, body))


async def completion_body(
    stream: AsyncIterator[Chunk], cid: str, created: int, req: CompletionRequest, total: int, echoes: list[str]
) -> Any:
    texts: list[list[str]] = [[e] for e in echoes]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(total)]
    finish: list[str | None] = [None] * total
    usage = Usage()
    async for chunk in stream:
        texts[chunk.index].append(chunk.text)
        if chunk.logprobs:
            logprobs[chunk.index].extend(chunk.logprobs)
        if chunk.finish_reason:
            finish[chunk.index] = chunk.finish_reason
        usage.add(chunk)
    choices = [
        {
            "index": i,
            "text": "".join(texts[i]),
            "logprobs": completion_logprobs(logprobs[i], len(echoes[i])) if req.logprobs is not None else None,
            "finish_reason": finish[i] or "stop",
        }
        for i in range(total)
    ]
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": req.model,
        "choices": choices,
        "usage": usage.as_dict(req.n),
    }


async def completion_events(
    stream: AsyncIterator[Chunk],
    cid: str,
    created: int,
    model: str,
    total: int,
    n: int,
    echoes: list[str],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    base: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created, "model": model}
    if include_usage:
        base["usage"] = None
    finish: list[str | None] = [None] * total
    usage = Usage()
    try:
        for i, echo in enumerate(echoes):
            if echo:
                yield sse({**base, "choices": [_text(i, echo)]})
        async for chunk in stream:
            if chunk is KEEPALIVE:
                yield PING
                continue
            if chunk.text or chunk.logprobs:
                choice = _text(chunk.index, chunk.text)
                if chunk.logprobs:
                    choice["logprobs"] = completion_logprobs(chunk.logprobs, 0)
                yield sse({**base, "choices": [choice]})
            if chunk.finish_reason:
                finish[chunk.index] = chunk.finish_reason
            usage.add(chunk)
        for i in range(total):
            yield sse({**base, "choices": [_text(i, "", finish[i] or "stop")]})
        if include_usage:
            yield sse({**base, "choices": [], "usage": usage.as_dict(n)})
    except Exception as exc:
        yield stream_error(cid, exc)
    yield DONE


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
