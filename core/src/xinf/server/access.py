"""Who may use the server: an IP allowlist and API keys, as one pure ASGI middleware.

Pure ASGI (not starlette's ``BaseHTTPMiddleware``) so that streamed responses
pass through untouched and an allowed request costs one dict lookup, one
membership test and one constant-time compare.  The middleware is only
installed when ``XINFERENCE_ALLOWED_IPS`` or an API key is set (``create_app``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from xinf.errors import AuthenticationError, PermissionDenied, XinfError
from xinf.server.http import encode_json
from xinf.settings import SettingsError

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Open without a key: liveness probes, the route Xinference clients call
# before they send their key to learn whether one is needed, and the web page
# (it holds no data; it asks for the key and sends it with its API calls).
OPEN_PATHS = frozenset({"/health", "/v1/cluster/auth", "/"})
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
    """Refuse clients outside ``allowed`` (403) and requests without a valid key (401)."""

    def __init__(self, app: ASGIApp, *, allowed: IPAllowlist | None, api_keys: list[str]):
        self.app = app
        self.allowed = allowed
        self.keys = [f"Bearer {k}".encode() for k in api_keys]
        self.raw_keys = [k.encode() for k in api_keys]  # Anthropic's clients send x-api-key: KEY

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan; no websocket routes exist
            return
        if self.allowed is not None:
            client = scope.get("client")
            if not self.allowed.allows(client[0] if client else None):
                await _refuse(send, PermissionDenied("your address is not allowed to use this server"))
                return
        if self.keys and not _open(scope["path"]) and not self._authorized(scope):
            error = AuthenticationError(
                "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
            await _refuse(
                send, error, {"www-authenticate": "Bearer"}, anthropic=scope["path"].startswith("/v1/messages")
            )
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given, keys = None, self.keys
        for name, value in scope["headers"]:
            if name == b"authorization":
                given, keys = value, self.keys
                break
            if name == b"x-api-key":
                given, keys = value, self.raw_keys
        if given is None:
            return False
        ok = False
        for key in keys:
            # compare_digest takes time independent of where the first difference is;
            # every key is compared so the time does not tell which one nearly matched.
            ok |= hmac.compare_digest(given, key)
        return ok


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
