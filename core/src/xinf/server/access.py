"""Who may use the server: an IP allowlist and API keys, as one pure ASGI middleware.

Pure ASGI (not starlette's ``BaseHTTPMiddleware``) so that streamed responses
pass through untouched and an allowed request costs one dict lookup, one
membership test and a few constant-time compares.  It is always installed:
without an admin key, admin routes answer only loopback clients.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from xinf.errors import AuthenticationError, PermissionDenied, XinfError
from xinf.server.auth import ADMIN, KeyRing, bearer, is_loopback, needs_admin
from xinf.server.http import encode_json
from xinf.settings import SettingsError

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Open without a key: liveness probes, the route Xinference clients call
# before they send their key to learn whether one is needed, and the web page
# (it holds no data; it asks for the key and sends it with its API calls).
OPEN_PATHS = frozenset({"/health", "/v1/cluster/auth", "/", "/token"})  # /token checks the key itself
OPEN_PREFIX = "/web/"


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """``["10.0.0.0/8", "::1", "192.168.1.7"]`` -> networks; a bad entry names itself."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise SettingsError(f"XINFERENCE_ALLOWED_IPS: {entry!r} is not an IP address or CIDR block") from None
    return networks


class IPAllowlist:
    """Membership of client addresses in a list of networks, cached per address."""

    def __init__(self, networks: list[Network]):
        self.networks = networks
        self._seen: dict[str, bool] = {}

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False  # a unix socket or a transport without a peer: nothing to check
        known = self._seen.get(host)
        if known is not None:
            return known
        allowed = self._check(host)
        if len(self._seen) < 65536:  # bounded: a scan from many addresses cannot grow it forever
            self._seen[host] = allowed
        return allowed

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; match them against IPv4 rules too.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)


class AccessControl:
    """Refuse clients outside ``allowed`` (403), requests without a valid key (401), and admin routes to
    anyone without the admin scope (403). See ``xinf.server.auth`` for the scopes."""

    def __init__(self, app: ASGIApp, *, allowed: IPAllowlist | None, keys: KeyRing):
        self.app = app
        self.allowed = allowed
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan; no websocket routes exist
            return
        # The real peer, or the client a trusted proxy named (uvicorn rewrites scope["client"] only
        # for the addresses in --forwarded-allow-ips).
        client = scope.get("client")
        host = client[0] if client else None
        if self.allowed is not None and not self.allowed.allows(host):
            await _refuse(send, PermissionDenied("your address is not allowed to use this server"))
            return
        path = scope["path"]
        if _open(path) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflights carry no credentials
            return
        role = None
        if not self.keys.empty:
            token = _token(scope)
            role = self.keys.role_of(token) if token is not None else None
            if role is None:
                await _refuse(
                    send,
                    AuthenticationError(
                        "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                        code="invalid_api_key",
                    ),
                    {"www-authenticate": "Bearer"},
                    anthropic=path.startswith("/v1/messages"),
                )
                return
        if needs_admin(scope["method"], path) and role != ADMIN:
            if self.keys.has_admin:
                await _refuse(send, PermissionDenied(f"{scope['method']} {path} needs an admin key"))
                return
            if not is_loopback(host):
                await _refuse(
                    send,
                    PermissionDenied(
                        f"{scope['method']} {path} is an admin route: without an admin key it answers only "
                        "clients on the server's machine"
                    ),
                )
                return
        await self.app(scope, receive, send)


def _token(scope: Scope) -> bytes | None:
    """The key of ``Authorization: Bearer KEY``, or of ``x-api-key: KEY`` (Anthropic's clients send that)."""
    other = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer(value)
        if name == b"x-api-key":
            other = value.strip() or None
    return other


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)


async def _refuse(send: Any, error: XinfError, headers: dict[str, str] | None = None, anthropic: bool = False) -> None:
    if anthropic:  # the Messages API's clients read Anthropic's error shape
        body = encode_json({"type": "error", "error": {"type": error.type, "message": error.message}})
    else:
        body = encode_json({"error": error.to_dict(), "detail": error.message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
