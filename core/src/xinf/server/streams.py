"""What streamed and collected OpenAI responses share: waiting for the first chunk, merging several
prompts' streams, SSE events with keep-alives and a closing error event, token usage, stopping work when the
client goes away."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.requests import Request

from xinf.errors import XinfError
from xinf.replica.handle import KEEPALIVE, KEEPALIVE_BATCH
from xinf.server.http import encode_json
from xinf.server.sse import DONE, EventStream
from xinf.types import Chunk, TokenLogprob

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"  # an SSE comment: clients ignore it, proxies see the connection is alive
T = TypeVar("T")
Batch = list[Chunk]  # the chunks one frame of a replica brought (``RunningModel.batches``)


async def first_and_rest(stream: AsyncIterator[T]) -> tuple[T | None, AsyncIterator[T]]:
    """Wait for the first item (a batch of chunks), so that errors before any output get a proper status."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        return None, stream
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    return first, stream


async def chain(first: T | None, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def merged(streams: list[AsyncIterator[Batch]], n: int) -> AsyncIterator[Batch]:
    """Several prompts' streams of batches as one, choice indexes offset by prompt."""
    if len(streams) == 1:
        async for batch in streams[0]:
            yield batch
        return
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[Batch]) -> None:
        try:
            async for batch in stream:
                if batch is not KEEPALIVE_BATCH:
                    for chunk in batch:
                        chunk.index += i * n
                queue.put_nowait(batch)
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


class Collected:
    """A non-streamed request's chunks, added up per choice."""

    def __init__(self, prefixes: list[str]):
        self.texts: list[list[str]] = [[p] if p else [] for p in prefixes]
        self.thoughts: list[list[str]] = [[] for _ in prefixes]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in prefixes]
        self.tool_calls: list[list[dict[str, Any]]] = [[] for _ in prefixes]
        self.finish: list[str | None] = [None] * len(prefixes)
        self.usage = Usage()

    async def read(self, stream: AsyncIterator[Batch]) -> Collected:
        async for batch in stream:
            for chunk in batch:
                i = chunk.index
                self.texts[i].append(chunk.text)
                if chunk.reasoning:
                    self.thoughts[i].append(chunk.reasoning)
                if chunk.logprobs:
                    self.logprobs[i].extend(chunk.logprobs)
                if chunk.tool_calls:
                    self.tool_calls[i].extend(chunk.tool_calls)
                if chunk.finish_reason:
                    self.finish[i] = chunk.finish_reason
                self.usage.add(chunk)
        return self

    def text(self, i: int) -> str:
        return "".join(self.texts[i])

    def calls(self, i: int) -> list[dict[str, Any]]:
        """Choice i's tool calls, whole: their streamed deltas added up by index."""
        whole: dict[int, dict[str, Any]] = {}
        for delta in self.tool_calls[i]:
            index = int(delta.get("index", len(whole)))
            call = whole.setdefault(
                index,
                {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if delta.get("id"):
                call["id"] = delta["id"]
            function = delta.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        return [whole[k] for k in sorted(whole)]

    def finish_reason(self, i: int) -> str:
        return self.finish[i] or "stop"


def response_body(
    kind: str, cid: str, created: int, model: str, choices: list[dict[str, Any]], usage: dict[str, Any]
) -> dict[str, Any]:
    return {"id": cid, "object": kind, "created": created, "model": model, "choices": choices, "usage": usage}


async def event_stream(
    stream: AsyncIterator[Batch],
    base: dict[str, Any],
    *,
    total: int,
    n: int,
    include_usage: bool,
    opening: list[dict[str, Any]],
    choice: Callable[[Chunk], bytes | None],
    closing: Callable[[int, str], dict[str, Any]],
    finish_of: Callable[[Chunk], str | None] = lambda chunk: chunk.finish_reason,
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed request: ``opening`` choices, one event per chunk that ``choice`` turns
    into a choice (its JSON), a ``closing`` choice per choice with its finish reason (``finish_of`` a chunk),
    the usage if asked, then [DONE].

    Each batch of chunks is one write (the opening goes with the first); once every choice has its finish
    reason, the rest of the stream goes out with the closing events in the last write. Keep-alives become SSE
    comments; an error after the 200 ends the stream with an error event.
    """
    if include_usage:
        base = {**base, "usage": None}
    # Every event is ``data: {base..., "choices": [CHOICE]}``: the bytes around CHOICE are encoded once.
    head = b"data: " + encode_json({**base, "choices": []})[:-2]
    tail = b"]}\n\n"
    finish: list[str | None] = [None] * total
    running = total  # choices without a finish reason yet
    usage = Usage()
    parts: list[bytes] = []
    try:
        for first in opening:
            parts += (head, encode_json(first), tail)
        async for batch in stream:
            for chunk in batch:
                if chunk is KEEPALIVE:
                    parts.append(PING)
                    continue
                event = choice(chunk)
                if event is not None:
                    parts += (head, event, tail)
                done = finish_of(chunk)
                if done:
                    if finish[chunk.index] is None:
                        running -= 1
                    finish[chunk.index] = done
                if chunk.usage is not None:
                    usage.add(chunk)
            if parts and running:
                yield b"".join(parts)
                parts = []
        for i in range(total):
            parts += (head, encode_json(closing(i, finish[i] or "stop")), tail)
        if include_usage:
            parts.append(sse({**base, "choices": [], "usage": usage.as_dict(n)}))
    except Exception as exc:
        parts.append(stream_error(base["id"], exc))
    parts.append(DONE)
    yield b"".join(parts)


def streamed(events: AsyncIterator[bytes]) -> EventStream:
    return EventStream(events, media_type="text/event-stream", headers=SSE_HEADERS)
