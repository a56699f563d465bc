"""OpenAI-compatible routes: chat completions, completions, embeddings, models."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from xinf.engine import Chunk, GenerateRequest, TokenLogprob
from xinf.errors import InvalidRequest, XinfError
from xinf.model import RunningModel
from xinf.replica.handle import KEEPALIVE
from xinf.schemas import ChatRequest, Sampling
from xinf.server.http import decode, encode_json, json_response, read_body
from xinf.server.parts import check_parts
from xinf.server.state import State
from xinf.toolcalls.choice import check_tools

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


def fingerprint(st: State, model: RunningModel) -> str:
    """OpenAI's ``system_fingerprint``: changes when xinf, the engine plugin or the model's build changes."""
    import hashlib

    from xinf import __version__

    info = st.plugins.engines.get(model.engine)
    build = f"{__version__}|{model.engine}|{info.version if info else ''}|{model.spec.name}|{model.spec.format}|"
    build += f"{model.spec.size_in_billions}|{model.spec.quantization}"
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
    check_parts(messages, model)
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
        self.cached_tokens: dict[int, int] = {}
        self.completion_tokens = 0

    def add(self, chunk: Chunk) -> None:
        if chunk.usage is not None:
            self.prompt_tokens[chunk.index] = chunk.usage.prompt_tokens
            self.completion_tokens += chunk.usage.completion_tokens
            if chunk.usage.cached_tokens is not None:
                self.cached_tokens[chunk.index] = chunk.usage.cached_tokens

    def as_dict(self, n: int) -> dict[str, Any]:
        # n choices of one prompt share its prompt tokens: count each prompt once.
        by_prompt: dict[int, int] = {}
        for index, tokens in self.prompt_tokens.items():
            by_prompt[index // n] = tokens
        prompt = sum(by_prompt.values())
        out: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt + self.completion_tokens,
        }
        if self.cached_tokens:  # only where the engine reports its prefix-cache hits
            cached: dict[int, int] = {}
            for index, tokens in self.cached_tokens.items():
                cached[index // n] = tokens
            out["prompt_tokens_details"] = {"cached_tokens": sum(cached.values())}
        return out


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
    model = st.manager.get(req.model)
    gen = chat_request(req, model, st)
    first, rest = await first_and_rest(model.generate(gen, req.n, keepalive(st, req.stream)))
    cid = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    fp = fingerprint(st, model)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = chat_events(chain(first, rest), cid, created, req.model, req.n, include_usage, fp)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    body = await until_disconnect(request, chat_body(chain(first, rest), cid, created, req, model))
    return json_response({**body, "system_fingerprint": fp})


async def chat_body(stream: AsyncIterator[Chunk], cid: str, created: int, req: ChatRequest, model: RunningModel) -> Any:
    texts: list[list[str]] = [[] for _ in range(req.n)]
    thoughts: list[list[str]] = [[] for _ in range(req.n)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(req.n)]
    tools: list[dict[int, dict[str, Any]]] = [{} for _ in range(req.n)]
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
            merge_tool_calls(tools[i], chunk.tool_calls)
        if chunk.finish_reason:
            finish[i] = chunk.finish_reason
        usage.add(chunk)
    choices = []
    for i in range(req.n):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts[i])}
        if model.spec.is_reasoning:
            message["reasoning_content"] = "".join(thoughts[i]) or None
        if tools[i]:
            message["tool_calls"] = [tools[i][k] for k in sorted(tools[i])]
            message["content"] = message["content"] or None  # as OpenAI: no text beside the calls is null
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
    stream: AsyncIterator[Chunk], cid: str, created: int, model: str, n: int, include_usage: bool, fp: str
) -> AsyncIterator[bytes]:
    base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    base["system_fingerprint"] = fp
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


def merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Add streamed tool-call deltas to whole calls, by their index."""
    for delta in deltas:
        index = int(delta.get("index", len(calls)))
        call = calls.setdefault(
            index, {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


# ---------------------------------------------------------------- models


async def list_models(request: Request) -> Response:
    st = state(request)
    return json_response({"object": "list", "data": [m.describe() for m in st.manager.models.values()]})
