"""Pictures and chat messages with images, for tests of images in chat (any engine)."""

from __future__ import annotations

import base64
import io
from typing import Any

QUESTION = "What is in the picture?"


def picture(color: tuple[int, int, int], size: tuple[int, int] = (80, 60), kind: str = "PNG") -> bytes:
    """A plain picture of one colour, encoded as ``kind`` (needs Pillow)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, kind)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def ask(*images: bytes, text: str = QUESTION) -> list[dict[str, Any]]:
    """One user message: the images as ``data:`` URL parts, then the question."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def stream_ask(client: Any, model: str, image: bytes, max_tokens: int) -> tuple[str | None, Any, int]:
    """Stream a question about ``image`` (an openai client, usage included, no early stop): the finish reason, the
    usage and how many chunks carried text."""
    stream = client.chat.completions.create(
        model=model,
        messages=ask(image),
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    finish, usage, pieces = None, None, 0
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces += bool(choice.delta.content)
            finish = choice.finish_reason or finish
    return finish, usage, pieces
