"""What the routes share: settings, the registry, the plugins and the running models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from xinf.manager import ModelManager
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.requests import RequestTracker
from xinf.settings import Settings


@dataclass
class State:
    settings: Settings
    registry: Registry
    plugins: PluginHost
    manager: ModelManager
    max_body: int = 32 << 20  # bytes (XINF_MAX_BODY_BYTES); a chat history longer than this is a mistake or an attack
    requests: RequestTracker = field(default_factory=RequestTracker)  # by request id: progress and abort
    extras: dict[str, Any] = field(default_factory=dict)  # per-feature state of route modules (autostart, reloads)


def state(request: Request) -> State:
    """The server's ``State``, as every route handler reaches it."""
    st: State = request.app.state.xinf
    return st
