"""The HTTP response of a server-sent event stream, kept light: a relayed token should cost the server little.

Starlette's ``StreamingResponse`` watches for the client's disconnect in an
anyio task group and ends every body with an extra empty write.  This one
watches with one plain task, and sends the stream's last item (the one that
ends with ``data: [DONE]``) together with the end of the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """``text/event-stream`` from an async iterator of bytes; a client that goes away cancels the iterator."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        streaming = True
        gone = False

        def on_disconnect(watcher: asyncio.Future[Any]) -> None:
            nonlocal gone
            if streaming and not watcher.cancelled() and watcher.exception() is None:
                gone = True
                task.cancel()  # raised where the stream waits: its generators close, the replica is told

        watcher = asyncio.ensure_future(_disconnect(receive))
        watcher.add_done_callback(on_disconnect)
        body = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            more = True
            async for data in body:
                if not isinstance(data, bytes):
                    data = bytes(data) if isinstance(data, memoryview) else data.encode(self.charset)
                more = not data.endswith(DONE)
                await send({"type": "http.response.body", "body": data, "more_body": more})
                if not more:
                    break
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: this cancellation is handled
            if uncancel is not None:
                uncancel()
        finally:
            streaming = False
            watcher.cancel()
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()
        if self.background is not None:
            await self.background()


async def _disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
