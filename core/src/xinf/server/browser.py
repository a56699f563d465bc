"""Browser safety: JSON routes take only JSON, and other origins only what the operator allows.

A web page can make a browser send a "simple" cross-site POST (a form, or
``fetch`` with ``text/plain``) without asking the server first. Refusing
bodies that are not ``application/json`` (415) turns every such request into
one the browser must preflight, and the preflight is answered by starlette's
``CORSMiddleware`` for the origins in ``--cors-allow-origins`` only.  A body-less
POST needs no content type, so a state-changing request that names a foreign
``Origin`` is refused too.

Xinference allows every origin (``allow_origins=["*"]``); xinf allows none by
default, so a page on another site cannot read or drive a server on this
machine. ``--cors-allow-origins '*'`` restores Xinference's behaviour.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from xinf.errors import PermissionDenied, XinfError

Scope = dict[str, Any]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes whose bodies are uploads (OpenAI's audio and image edits), not JSON.
MULTIPART_PREFIXES = ("/v1/audio/", "/v1/images/", "/v1/video/")


class UnsupportedMediaType(XinfError):
    status = 415
    type = "invalid_request_error"


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonOnly:
    """415 for a body that is not JSON; 403 for a write from an origin neither this server nor allowed."""

    def __init__(self, app: Any, *, origins: list[str]):
        self.app = app
        self.any_origin = "*" in origins
        self.origins = {o.rstrip("/").lower() for o in origins}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        error = self._check(scope, headers)
        if error is not None:
            from xinf.server.access import _refuse

            await _refuse(send, error)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> XinfError | None:
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), headers.get(b"host")):
            return PermissionDenied(
                f"requests from origin {origin.decode('latin-1')!r} are not allowed "
                "(the server's --cors-allow-origins / XINF_CORS_ALLOW_ORIGINS)",
                code="origin_not_allowed",
            )
        content_type = headers.get(b"content-type")
        length = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))
        if content_type is None and not has_body:
            return None
        text = (content_type or b"").decode("latin-1")
        if is_json(text):
            return None
        if scope["path"].startswith(MULTIPART_PREFIXES) and text.lower().startswith("multipart/form-data"):
            return None
        shown = text.split(";", 1)[0] or "none"
        return UnsupportedMediaType(
            f"this route takes a JSON body: send 'Content-Type: application/json' (got {shown})",
            code="unsupported_media_type",
        )

    def _origin_allowed(self, origin: str, host: bytes | None) -> bool:
        if self.any_origin or origin.rstrip("/").lower() in self.origins:
            return True
        # The server's own pages (the web UI) send their own origin.
        return host is not None and urlsplit(origin).netloc.lower() == host.decode("latin-1").lower()
