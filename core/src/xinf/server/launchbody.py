"""A launch request's body split into Xinference's launch fields and engine options (admin routes, autostart)."""

from __future__ import annotations

from typing import Any

import msgspec

from xinf.errors import InvalidRequest
from xinf.registry import MODEL_TYPES
from xinf.schemas import LAUNCH_FIELDS, LaunchRequest
from xinf.server.http import validation_error


def split_launch(body: dict[str, Any]) -> tuple[LaunchRequest, dict[str, Any]]:
    """Xinference's launch fields, and everything else as engine options."""
    known = {k: v for k, v in body.items() if k in LAUNCH_FIELDS}
    if "size_in_billions" in known:
        known.setdefault("model_size_in_billions", known.pop("size_in_billions"))
    options = {k: v for k, v in body.items() if k not in LAUNCH_FIELDS and v is not None}
    try:
        req = msgspec.convert(known, LaunchRequest)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    if req.model_type not in (None, *MODEL_TYPES):
        raise InvalidRequest(
            f"model_type {req.model_type!r} is not served here (served: {', '.join(MODEL_TYPES)})", param="model_type"
        )
    return req, options
