"""Images in chat messages, in the plain form every engine plugin gets.

The server (``xinf.server.vision``) turns each ``image_url`` part of a request
into an *image part*: ``{"type": "image", "media_type": "image/png", "data":
b"..."}``, the image's bytes checked to be a PNG, JPEG, WebP or GIF.  Engines
never see a URL or base64 text, and need no imaging library to read the parts:

- a Hugging Face processor's chat template wants ``{"type": "image"}`` where an
  image goes (``placeholders``) and the images, in order, beside it (``images_of``);
- llama.cpp's and vLLM's chat APIs want OpenAI ``image_url`` parts with a
  ``data:`` URL (``as_data_urls``).

The bytes travel to the replica in the request's msgpack frame as they are.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

IMAGE = "image"
#: the image formats served, by media type, with what their files start with
SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # and "WEBP" at byte 8
}
MEDIA_TYPES = tuple(SIGNATURES)


class Image(NamedTuple):
    """One image of a request: its media type and its file's bytes."""

    media_type: str
    data: bytes


def sniff(data: bytes) -> str | None:
    """The media type ``data`` starts like, or None when it is none of the served formats."""
    for media_type, starts in SIGNATURES.items():
        if any(data.startswith(s) for s in starts):
            if media_type == "image/webp" and data[8:12] != b"WEBP":
                continue
            return media_type
    return None


def is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == IMAGE and isinstance(part.get("data"), bytes)


def image_part(image: Image) -> dict[str, Any]:
    return {"type": IMAGE, "media_type": image.media_type, "data": image.data}


def images_of(messages: list[dict[str, Any]] | None) -> list[Image]:
    """Every image part of ``messages``, in the order a template meets them."""
    out: list[Image] = []
    for message in messages or []:
        content = message.get("content")
        if isinstance(content, list):
            out.extend(Image(p["media_type"], p["data"]) for p in content if is_image(p))
    return out


def has_images(messages: list[dict[str, Any]] | None) -> bool:
    return any(isinstance(m.get("content"), list) and any(is_image(p) for p in m["content"]) for m in messages or [])


def _map_parts(messages: list[dict[str, Any]], change: Any) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(is_image(p) for p in content):
            message = {**message, "content": [change(p) if is_image(p) else p for p in content]}
        out.append(message)
    return out


def placeholders(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each image part as ``{"type": "image"}``: what Hugging Face chat templates expect."""
    return _map_parts(messages, lambda p: {"type": IMAGE})


def data_url(image: Image) -> str:
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def as_data_urls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each image part as an OpenAI ``image_url`` part holding a ``data:`` URL."""
    return _map_parts(
        messages, lambda p: {"type": "image_url", "image_url": {"url": data_url(Image(p["media_type"], p["data"]))}}
    )
