"""API keys with scopes, and which routes need which scope.

Two scopes: ``inference`` (the OpenAI routes and read-only listings) and
``admin`` (everything that changes what runs: launch, terminate, replicas,
registrations, caches, virtual environments). An admin key may do both.

Keys come from the environment or a file, never from the command line (``ps``
shows command lines to every user of the machine):

- ``XINF_API_KEY``: one admin key (what ``--api-key`` set before, kept for
  Xinference's clients);
- ``XINF_INFERENCE_API_KEYS``: comma-separated inference keys;
- ``XINF_API_KEYS_FILE`` (``--api-key-file``): one ``ROLE KEY`` per line,
  ``ROLE`` being ``admin`` or ``inference``, ``KEY`` the key itself or
  ``sha256:<hex>`` of it so the file holds no usable secret.

Without any admin key, admin routes answer only clients on this machine
(loopback addresses), whatever key they send.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from pathlib import Path

from xinf.settings import Settings, SettingsError

ADMIN = "admin"
INFERENCE = "inference"
ROLES = (ADMIN, INFERENCE)

# POST routes an inference key may call: generation of every kind. Any other
# POST/PUT/PATCH/DELETE is an admin route, so a route added later is closed by
# default until it is listed here.
INFERENCE_POSTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/audio/",
    "/v1/images/",
    "/v1/tokenize",
    "/v1/detokenize",
    "/v1/convert_ids_to_tokens",
    "/v1/video/",
    "/v1/worlds/",
    "/v1/flexible/",
)
# A client may abort its own request (Xinference's abort_request); request ids are not guessable.
INFERENCE_PATTERNS = (re.compile(r"/v1/models/[^/]+/requests/[^/]+/abort"),)
# Read-only routes that still only admins may read: they list files on the server.
ADMIN_READS = ("/v1/cache/", "/v1/virtualenvs", "/v1/autostart/")  # autostart: launch bodies with their envs
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def needs_admin(method: str, path: str) -> bool:
    """Whether ``method path`` is an admin route."""
    if method in READ_METHODS:
        return path.startswith(ADMIN_READS) or path == "/v1/cache"
    if any(path == p or (p.endswith("/") and path.startswith(p)) for p in INFERENCE_POSTS):
        return False
    return not any(pattern.fullmatch(path) for pattern in INFERENCE_PATTERNS)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class KeyRing:
    """Every configured key as a SHA-256 digest, with its role; compared in constant time."""

    def __init__(self, entries: list[tuple[str, bytes]]):
        self.entries = entries

    @property
    def empty(self) -> bool:
        return not self.entries

    @property
    def has_admin(self) -> bool:
        return any(role == ADMIN for role, _ in self.entries)

    def role_of(self, key: bytes) -> str | None:
        """The role of ``key`` (the bearer token), or None when it is no configured key."""
        digest = hashlib.sha256(key).digest()
        found: str | None = None
        # Every entry is compared, so the time taken does not tell which one nearly matched.
        for role, stored in self.entries:
            if hmac.compare_digest(digest, stored) and found != ADMIN:
                found = role
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries: list[tuple[str, bytes]] = []
        if settings.api_key:
            entries.append((ADMIN, _digest(settings.api_key)))
        entries += [(INFERENCE, _digest(k)) for k in settings.inference_api_keys]
        if settings.api_keys_file is not None:
            entries += read_key_file(settings.api_keys_file)
        return cls(entries)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_key_file(path: Path) -> list[tuple[str, bytes]]:
    """``ROLE KEY`` or ``ROLE sha256:HEX`` per line; ``#`` starts a comment. Errors name the line, never the key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"XINF_API_KEYS_FILE: cannot read {path}: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            raise SettingsError(f"XINF_API_KEYS_FILE {path}, line {number}: expected 'admin KEY' or 'inference KEY'")
        role, key = parts
        if key.startswith("sha256:"):
            hexdigest = key[len("sha256:") :]
            if not _HEX.match(hexdigest):
                raise SettingsError(f"XINF_API_KEYS_FILE {path}, line {number}: sha256: needs 64 hex digits")
            entries.append((role, bytes.fromhex(hexdigest)))
        else:
            entries.append((role, _digest(key)))
    return entries


def bearer(value: bytes) -> bytes | None:
    """The token of an ``Authorization`` header; the scheme is case-insensitive (RFC 9110)."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token or None
