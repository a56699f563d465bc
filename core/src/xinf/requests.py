"""Requests in flight by id: progress, and abort from another connection.

A chat or completion request is named by the client's ``request_id``
(Xinference's ``generate_config={"request_id": ...}``) or by its response id.
The server tracks it whichever replica serves it, so
``POST /v1/models/{uid}/requests/{id}/abort`` stops it on any replica and
``GET /v1/requests/{id}/progress`` reports how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from xinf.errors import Conflict, InvalidRequest
from xinf.replica.handle import KEEPALIVE_BATCH
from xinf.types import Chunk

FINISHED_KEPT = 1024  # finished requests whose progress can still be asked for
ABORT = "abort"  # the finish_reason of every choice of an aborted request


class Tracked:
    """One request: its model, how many tokens it may and did produce, its state."""

    def __init__(self, request_id: str, model_uid: str, max_tokens: int | None, n: int):
        self.id = request_id
        self.model_uid = model_uid
        self.max_tokens = max_tokens
        self.n = n
        self.produced = 0
        self.status = "running"
        self.created = time.time()
        self.aborted = asyncio.Event()
        self.queue: asyncio.Queue[Any] | None = None  # the stream's, while watched

    def abort(self) -> None:
        self.aborted.set()
        if self.queue is not None:
            self.queue.put_nowait(_ABORTED)

    @property
    def progress(self) -> float:
        if self.status != "running":
            return 1.0
        if not self.max_tokens:
            return 0.0
        return min(1.0, self.produced / (self.max_tokens * self.n))


class RequestTracker:
    """Every request in flight on this server, and the last finished ones."""

    def __init__(self) -> None:
        self.active: dict[str, Tracked] = {}
        self.finished: OrderedDict[str, Tracked] = OrderedDict()
        self.blocked: dict[tuple[str, str], float] = {}  # (uid, id) -> until (monotonic)

    def start(self, model_uid: str, request_id: str, max_tokens: int | None, n: int = 1) -> Tracked:
        if request_id in self.active:
            raise Conflict(f"request_id {request_id!r} is already in flight", param="request_id")
        tracked = Tracked(request_id, model_uid, max_tokens, n)
        until = self.blocked.pop((model_uid, request_id), None)
        if until is not None and until > time.monotonic():
            tracked.aborted.set()  # aborted before it arrived (Xinference's block_duration)
        self.active[request_id] = tracked
        return tracked

    def abort(self, model_uid: str, request_id: str, block_duration: float = 30) -> str:
        """Stop a request of ``model_uid``: "DONE", or "NO_OP" when it is not in flight (then blocked a while)."""
        tracked = self.active.get(request_id)
        if tracked is not None and tracked.model_uid == model_uid:
            tracked.abort()
            return "DONE"
        now = time.monotonic()
        self.blocked = {k: v for k, v in self.blocked.items() if v > now}
        if block_duration > 0:
            self.blocked[(model_uid, request_id)] = now + block_duration
        return "NO_OP"

    def progress(self, request_id: str) -> float:
        tracked = self.active.get(request_id) or self.finished.get(request_id)
        if tracked is None:
            raise InvalidRequest(f"no request with id {request_id!r} is known here", param="request_id")
        return tracked.progress

    def _done(self, tracked: Tracked, status: str) -> None:
        tracked.status = status
        if self.active.get(tracked.id) is tracked:
            del self.active[tracked.id]
        self.finished[tracked.id] = tracked
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    async def watch(self, tracked: Tracked, stream: AsyncIterator[list[Chunk]]) -> AsyncIterator[list[Chunk]]:
        """``stream``'s batches of chunks, counted; an abort stops it where it is and ends every choice with "abort".

        The stream is pumped by its own task so that an abort ends it even
        while the engine sends nothing; cancelling that task cancels the
        request on its replica.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if tracked.aborted.is_set():
            await stream.aclose()  # type: ignore[attr-defined]
            yield [Chunk(finish_reason=ABORT, index=i) for i in range(tracked.n)]
            self._done(tracked, "aborted")
            return

        async def pump() -> None:
            try:
                async for batch in stream:
                    queue.put_nowait(batch)
            except BaseException as exc:  # handed to the consumer
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_END)

        tracked.queue = queue
        task = asyncio.ensure_future(pump())
        status = "failed"
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    status = "finished"
                    return
                if item is _ABORTED:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    yield [Chunk(finish_reason=ABORT, index=i) for i in range(tracked.n)]
                    status = "aborted"
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is not KEEPALIVE_BATCH:
                    for chunk in item:
                        if chunk.text or chunk.reasoning or chunk.tool_calls:
                            tracked.produced += 1
                yield item
        finally:
            tracked.queue = None
            if not task.done():
                task.cancel()
            self._done(tracked, status)


_END = object()
_ABORTED = object()
