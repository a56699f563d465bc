"""Images sent in chat: ``image_url`` parts become image parts (``xinf.vision``) before any engine sees them.

- ``data:`` URLs (base64; PNG, JPEG, WebP or GIF) are decoded here;
- ``http(s)`` URLs are fetched by the server only when the operator allows it
  (``XINF_ALLOW_IMAGE_URLS=1``): a server that fetches what clients name can be
  made to reach addresses only it can reach, so it is off by default;
- each image is at most ``XINF_MAX_IMAGE_BYTES`` (decoded), a request holds at
  most ``XINF_MAX_IMAGES``, a fetch takes at most ``XINF_IMAGE_FETCH_TIMEOUT``
  seconds.

Each refusal is a 400 that names the part (``messages[i].content[j]``) and
what is wrong with it.  The media type is taken from the bytes: a JPEG sent as
``data:image/png`` is read as the JPEG it is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from xinf.errors import InvalidRequest
from xinf.settings import Settings
from xinf.vision import MEDIA_TYPES, Image, image_part, sniff

IMAGE_PARTS = ("image_url",)
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_FORMATS = "PNG, JPEG, WebP or GIF"


async def resolve(messages: list[dict[str, Any]] | None, settings: Settings) -> list[dict[str, Any]] | None:
    """``messages`` with every ``image_url`` part replaced by an image part; the same list when there is none."""
    if not messages or not any(_has_image_url(m) for m in messages):
        return messages
    count = 0
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list) or not _has_image_url(message):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in IMAGE_PARTS:
                count += 1
                where = f"messages[{i}].content[{j}]"
                if count > settings.max_images:
                    raise InvalidRequest(
                        f"{where}: more than {settings.max_images} images in one request, this server's limit "
                        "(XINF_MAX_IMAGES)",
                        param=where,
                        code="too_many_images",
                    )
                part = image_part(await load(part, where, settings))
            parts.append(part)
        out.append({**message, "content": parts})
    return out


def _has_image_url(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in IMAGE_PARTS for p in content)


async def load(part: dict[str, Any], where: str, settings: Settings) -> Image:
    """The image an ``image_url`` part names (``{"image_url": {"url": ...}}``, or the URL as a plain string)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.image_url.url must be a data: or http(s) URL", param=f"{where}.image_url")
    if url.startswith("data:"):
        return decode_data_url(url, where, settings.max_image_bytes)
    if url.startswith(("http://", "https://")):
        if not settings.allow_image_urls:
            raise InvalidRequest(
                f"{where}: this server does not fetch image URLs; send the image as a data: URL "
                "(data:image/png;base64,...), or start the server with XINF_ALLOW_IMAGE_URLS=1",
                param=f"{where}.image_url",
                code="image_urls_disabled",
            )
        return await fetch(url, where, settings)
    scheme = url.split(":", 1)[0][:20] if ":" in url else url[:20]
    raise InvalidRequest(
        f"{where}: image URLs must be data: or http(s) URLs, not {scheme!r}", param=f"{where}.image_url"
    )


def decode_data_url(url: str, where: str, limit: int) -> Image:
    """A ``data:<media type>;base64,<data>`` URL's image; 400 for any other kind, a bad encoding or a large one."""
    header, comma, payload = url.partition(",")
    fields = header[5:].split(";")
    declared = _ALIASES.get(fields[0].strip().lower(), fields[0].strip().lower())
    if not comma or "base64" not in fields[1:]:
        raise InvalidRequest(
            f"{where}: a data: URL must be base64 (data:image/png;base64,...)", param=f"{where}.image_url"
        )
    if declared and declared not in MEDIA_TYPES:
        raise InvalidRequest(
            f"{where}: media type {declared!r} is not served; send a {_FORMATS} image",
            param=f"{where}.image_url",
            code="unsupported_image",
        )
    payload = "".join(payload.split())  # line breaks in base64 are common and harmless
    if len(payload) // 4 * 3 > limit + 3:  # checked before decoding anything
        raise _too_large(where, len(payload) // 4 * 3, limit)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{where}: the data: URL's base64 does not decode", param=f"{where}.image_url", code="invalid_image"
        ) from None
    return _checked(data, where, limit)


def _checked(data: bytes, where: str, limit: int) -> Image:
    if len(data) > limit:
        raise _too_large(where, len(data), limit)
    media_type = sniff(data)
    if media_type is None:
        raise InvalidRequest(
            f"{where}: the data is not a {_FORMATS} image", param=f"{where}.image_url", code="invalid_image"
        )
    return Image(media_type, data)


def _too_large(where: str, size: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"{where}: the image is {size} bytes, over this server's limit of {limit} (XINF_MAX_IMAGE_BYTES)",
        param=f"{where}.image_url",
        code="image_too_large",
    )


async def fetch(url: str, where: str, settings: Settings) -> Image:
    """GET ``url`` (redirects followed, at most 3) within the fetch timeout, reading no more than the size limit."""
    import httpx

    shown = url if len(url) <= 120 else url[:117] + "..."
    timeout = settings.image_fetch_timeout
    try:
        data = await asyncio.wait_for(_get(url, where, shown, settings), timeout or None)
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        why = (
            f"no image within {timeout:g} s (XINF_IMAGE_FETCH_TIMEOUT)" if isinstance(exc, asyncio.TimeoutError) else ""
        )
        raise InvalidRequest(
            f"{where}: could not fetch {shown}: {why or type(exc).__name__ + ' ' + str(exc)}".rstrip(),
            param=f"{where}.image_url",
            code="image_fetch_failed",
        ) from None
    return _checked(data, where, settings.max_image_bytes)


async def _get(url: str, where: str, shown: str, settings: Settings) -> bytes:
    import httpx

    limit = settings.max_image_bytes
    async with httpx.AsyncClient(follow_redirects=True, max_redirects=3) as client:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequest(
                    f"{where}: fetching {shown} answered HTTP {response.status_code}",
                    param=f"{where}.image_url",
                    code="image_fetch_failed",
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(where, int(declared), limit)
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > limit:
                    raise _too_large(where, len(data), limit)
    return bytes(data)
