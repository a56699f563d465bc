"""``x-request-id`` on every response: the client's own ``X-Request-Id`` when it sent a sane one, else a new id."""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Scope

# Echoed into a response header and the logs: printable, no separators that could split a header.
_SANE = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")


class RequestId:
    """Pure ASGI middleware, outermost, so refusals (401, 403, 413) carry the id too."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = given if given is not None and _SANE.match(given) else f"req_{secrets.token_hex(12)}".encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
