"""The benchmarks' HTTP client: streamed chat requests over keep-alive HTTP/1.1, reading as little as it can.

The client runs on the same two cores as the server, the replica and the
engine, and the in-process side of a comparison has no client at all: every
microsecond the client spends per token is taken from the engine and counted
against xinf.  A general client (httpx: ~340 us of CPU per token at one
stream here) splits the body into lines and decodes every event; this one
reads the chunked body as the server wrote it (one chunk per write), decodes
events only until the first token, and the usage from the last write.  A
client on another machine, as in a deployment, costs the server's cores
nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from bench.knobs import messages


class Connection:
    """One keep-alive HTTP/1.1 connection that posts a request and reads its chunked reply to the end."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, first: Callable[[bytes], bool] | None = None) -> tuple[bytes, float]:
        """(the reply's last 4 KiB, ``time.perf_counter()`` when ``first`` first held for a chunk, else 0).

        A kept-alive connection the server has closed meanwhile (its idle timeout) is reopened and the request
        sent again: the server read none of it.
        """
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reused = self.writer is not None
        try:
            status = await self._send(head + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            if not reused:
                raise
            status = await self._send(head + body)
        assert self.reader is not None
        if not status.startswith(b"HTTP/1.1 200"):
            self.close()
            raise RuntimeError(status.decode(errors="replace"))
        tail = b""
        when = 0.0
        while True:  # chunked transfer encoding: size line, data, CRLF; size 0 ends the reply
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                return tail, when
            if first is not None and not when and first(data):
                when = time.perf_counter()
            tail = (tail + data[:-2])[-4096:]

    async def _send(self, request: bytes) -> bytes:
        """Write ``request`` (opening the connection if it is closed) and read the reply's status and headers."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        assert self.reader is not None
        self.writer.write(request)
        return await self.reader.readuntil(b"\r\n\r\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def first_text(choice: dict[str, Any]) -> bool:
    """A streamed chat choice carrying text (a reasoning model's thoughts count: they are tokens too)."""
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content"))


def has_text(data: bytes) -> bool:
    """Whether one write of an SSE chat stream carries a token."""
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: {") and any(first_text(c) for c in json.loads(event[6:]).get("choices") or []):
            return True
    return False


def completion_tokens(tail: bytes) -> int:
    """The usage's completion tokens, from the end of a stream that asked for ``include_usage``."""
    usage = [event for event in tail.split(b"\n\n") if b'"usage":{' in event][-1]
    return int(json.loads(usage[6:])["usage"]["completion_tokens"])


class OverHttp:
    """Streamed chat requests to an OpenAI-compatible server, each on a free keep-alive connection."""

    def __init__(self, url: str, model: str, tokens: int):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.model = model
        self.tokens = tokens
        self.idle: list[Connection] = []

    async def one(self, i: int) -> tuple[int, float]:
        """Request ``i`` (``bench.knobs.messages``): (completion tokens, seconds to the first token)."""
        body = {
            "model": self.model,
            "messages": messages(i),
            "max_tokens": self.tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        connection = self.idle.pop() if self.idle else Connection(self.host, self.port)
        start = time.perf_counter()
        try:
            tail, first = await connection.post("/v1/chat/completions", json.dumps(body).encode(), has_text)
        except BaseException:
            connection.close()
            raise
        self.idle.append(connection)
        return completion_tokens(tail), (first - start if first else 0.0)

    async def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
