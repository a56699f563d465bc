"""The server's protective middleware, outermost first: CORS, then who may call, then JSON only.

CORS is outermost so that its headers are on every answer a browser reads,
refusals included, and a preflight (OPTIONS) is answered before any key is
asked for (browsers send preflights without credentials).
"""

from __future__ import annotations

import logging

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from xinf.server import access, auth, browser
from xinf.settings import Settings

log = logging.getLogger("xinf.server")


def middleware(settings: Settings) -> list[Middleware]:
    keys = auth.KeyRing.from_settings(settings)
    allowed = access.IPAllowlist(access.parse_networks(settings.allowed_ips)) if settings.allowed_ips else None
    stack = []
    if settings.cors_allow_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "X-Api-Key", "Content-Type"],
                # Keys travel in the Authorization header, never in cookies: no credentials mode.
                allow_credentials=False,
                max_age=600,
            )
        )
    stack.append(Middleware(access.AccessControl, allowed=allowed, keys=keys))
    stack.append(Middleware(browser.JsonOnly, origins=settings.cors_allow_origins))
    return stack


def apply_options(settings: Settings, key_file: str | None, forwarded: str | None, origins: str | None) -> None:
    """``xinf serve`` options over their variables; the key file is read now so a bad one stops start-up."""
    from pathlib import Path

    if key_file:
        settings.api_keys_file = Path(key_file).expanduser()
    if forwarded is not None:
        settings.forwarded_allow_ips = [p.strip() for p in forwarded.split(",") if p.strip()]
    if origins is not None:
        settings.cors_allow_origins = [p.strip() for p in origins.split(",") if p.strip()]
    auth.KeyRing.from_settings(settings)


def startup_notes(settings: Settings, host: str) -> list[str]:
    """What the start-up log says about access (one line each), for ``xinf serve``."""
    keys = auth.KeyRing.from_settings(settings)
    notes = []
    if not keys.has_admin and not auth.is_loopback(host) and host not in ("localhost",):
        notes.append(
            f"no admin key: admin routes (launch, terminate, register, caches, virtual envs) answer only "
            f"clients on this machine although the server listens on {host}"
        )
    return notes
