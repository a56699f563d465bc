"""JSON in and out, and OpenAI-shaped errors."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from xinf.errors import InvalidRequest, XinfError

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$\.?(.*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(.+?)`")


def encode_json(data: Any) -> bytes:
    return _encoder.encode(data)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(data), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: XinfError) -> Response:
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    # "detail" keeps Xinference's own client able to show the message.
    return json_response({"error": exc.to_dict(), "detail": exc.message}, exc.status, headers)


def query_flag(request: Request, name: str, default: bool) -> bool:
    """A yes/no query parameter (``?wait_ready=false``): true, 1 or yes is yes; absent is ``default``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    return raw.lower() in ("true", "1", "yes")


def decode(body: bytes, type: type[T]) -> T:
    """Decode and validate a JSON body; any problem is a 400 naming the field."""
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body, type=type)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid UTF-8: {exc}", code="invalid_json") from None
    except RecursionError:
        # msgspec stops at about 1,000 levels; finer limits per field are in xinf.server.limits.
        raise InvalidRequest("the request body is nested too deeply", code="too_deep") from None


def validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    text = str(exc)
    unknown = _UNKNOWN.search(text)
    if unknown:
        param = _param(text, unknown.group(1))
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter")
    match = _PATH.search(text)
    path = match.group(1) if match else None
    message = text[: match.start()] if match else text
    if path:
        message = f"invalid value for '{path}': {message}"
    return InvalidRequest(message, param=path, code="invalid_value")


def _param(text: str, field: str) -> str:
    match = _PATH.search(text)
    prefix = match.group(1) if match else ""
    return f"{prefix}.{field}" if prefix else field


def check_declared_length(request: Request, limit: int) -> None:
    """413 before reading when the declared ``content-length`` passes ``limit`` bytes."""
    from xinf.errors import PayloadTooLarge

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")


def check_multipart(request: Request, limit: int, field: str, what: str) -> None:
    """A multipart upload's checks before its form is read: its content type (400 naming ``field``) and length."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(f"send {what} as multipart/form-data with a '{field}' field", param=field)
    check_declared_length(request, limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it passes ``limit`` bytes."""
    from xinf.errors import PayloadTooLarge

    check_declared_length(request, limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
