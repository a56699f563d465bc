"""Connection limits: idle keep-alive, header and body read timeouts, and a connection cap.

Why uvicorn with its httptools protocol, extended here, rather than another
ASGI server: uvicorn already gives the idle keep-alive timeout
(``timeout_keep_alive``) and is the stack every streaming figure in the
README's benchmarks was measured on (about a millisecond added per request).
What it lacks is a header-read timeout, a body-read timeout and a real
connection cap (``limit_concurrency`` answers 503 per request but keeps
accepting and holding connections).  Measured here (uvicorn 0.54, httptools):
a client trickling one header byte a second, and a connection that sends
nothing, were both still held after 20 s; with ``GuardedProtocol`` and
``XINF_HEADER_TIMEOUT=3`` both were closed at 3.0 s.  Hypercorn's
``read_timeout`` bounds each read, so such a trickle resets it; granian is a
compiled server whose streaming path would have to be measured again from
scratch.  The three missing limits are a few timers on uvicorn's protocol
class, the one object that sees every byte of a connection:

- **header timeout** (``XINF_HEADER_TIMEOUT``): from a connection's first byte
  (or its opening) until the request's headers are complete; a slow-header
  (slowloris) client gets a 408 and is closed.
- **body timeout** (``XINF_BODY_TIMEOUT``): seconds without a byte of an
  unfinished request body; then 408 and close.
- **connection cap** (``XINF_MAX_CONNECTIONS``): past it, a new connection is
  answered ``503`` with ``Connection: close`` at once, so the server never
  runs into the process's open-file limit while holding idle sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools wheel for this platform: uvicorn's defaults, keep-alive timeout only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from xinf.settings import Settings

log = logging.getLogger("xinf.server")


def _response(status: str, message: str) -> bytes:
    body = json.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}, "detail": message}
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class Limits:
    """The numbers the protocol enforces (set once by ``xinf serve``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024


_Base: Any = HttpToolsProtocol if HttpToolsProtocol is not None else object


class GuardedProtocol(_Base):  # type: ignore[misc]
    """uvicorn's httptools protocol plus the header and body timeouts and the connection cap."""

    limits = Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._last_body = 0.0
        self._in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            # Refused before uvicorn counts it: answer and close, never hold the socket.
            transport.write(
                _response(
                    "503 Service Unavailable",
                    f"the server holds its limit of {self.limits.max_connections} connections "
                    "(XINF_MAX_CONNECTIONS); retry shortly",
                )
            )
            transport.close()
            self.transport = transport
            self._refused = True
            return
        self._refused = False
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._header_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if getattr(self, "_refused", False):
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    # ---- timers

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        if delay > 0:
            self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_with(self, status: str, message: str) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(_response(status, message))
        self.transport.close()

    def _header_expired(self) -> None:
        self._timer = None
        self._close_with("408 Request Timeout", f"request headers not received within {self.limits.header_timeout:g}s")

    def _body_check(self) -> None:
        self._timer = None
        if not self._in_body:
            return
        idle = self.loop.time() - self._last_body
        if idle < self.limits.body_timeout:
            self._timer = self.loop.call_later(self.limits.body_timeout - idle, self._body_check)
            return
        self._close_with("408 Request Timeout", f"no request body received for {self.limits.body_timeout:g}s")

    # ---- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:
            self._arm(self.limits.header_timeout, self._header_expired)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._in_body = True
        self._last_body = self.loop.time()
        if self.limits.body_timeout > 0:
            self._timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()  # one clock read per piece; the timer re-arms itself
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()


def configure(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the limits in ``settings``."""
    Limits.header_timeout = settings.header_timeout
    Limits.body_timeout = settings.body_timeout
    Limits.max_connections = _capped(settings.max_connections)
    if HttpToolsProtocol is None:
        log.warning("httptools is not installed: no header or body timeout, no connection cap")
        return {"timeout_keep_alive": settings.keepalive_timeout}
    return {"http": GuardedProtocol, "timeout_keep_alive": settings.keepalive_timeout}


def _capped(wanted: int) -> int:
    """The cap, kept under the open-file limit (raised to its hard maximum first) with room for replicas and logs."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ImportError, ValueError, OSError):
        return wanted
    room = max(64, soft - 256)
    if wanted > room:
        log.warning("XINF_MAX_CONNECTIONS=%d is over the open-file limit allows; using %d", wanted, room)
        return room
    return wanted
