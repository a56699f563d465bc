"""Requests in flight by id: progress, and abort from another connection.

A chat or completion request is named by the client's ``request_id``
(Xinference's ``generate_config={"request_id": ...}``) or by its response id.
The server tracks it whichever replica serves it, so
``POST /v1/models/{uid}/requests/{id}/abort`` stops it on any replica and
``GET /v1/requests/{id}/progress`` reports how far it got.
"""

from __future__ import annotations

import asyncio
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
        self.waiting: asyncio.Task[Any] | None = None  # the task waiting for the stream's next batch, if one is

    def abort(self) -> None:
        self.aborted.set()
        if self.waiting is not None:
            self.waiting.cancel()  # the watcher turns this cancellation into the abort's ending

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

        The batches are read in the consumer's own task (a relayed token
        wakes no other task): an abort that comes while the stream waits
        cancels that wait, which cancels the request on its replica, and one
        that comes while the consumer is busy elsewhere is seen when it asks
        for the next batch.
        """
        status = "failed"
        try:
            while not tracked.aborted.is_set():
                tracked.waiting = asyncio.current_task()
                try:
                    batch = await stream.__anext__()
                except StopAsyncIteration:
                    status = "finished"
                    return
                except asyncio.CancelledError:
                    if not tracked.aborted.is_set():
                        raise
                    _uncancel()
                    break
                finally:
                    tracked.waiting = None
                if batch is not KEEPALIVE_BATCH:
                    for chunk in batch:
                        if chunk.text or chunk.reasoning or chunk.tool_calls:
                            tracked.produced += 1
                yield batch
            await stream.aclose()  # type: ignore[attr-defined]
            yield [Chunk(finish_reason=ABORT, index=i) for i in range(tracked.n)]
            status = "aborted"
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # no-op once it ended
            self._done(tracked, status)


def _uncancel() -> None:
    """The abort's cancellation is handled here: the task goes on (Python 3.11+ counts cancellations)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
