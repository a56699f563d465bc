"""``POST /v1/images/generations`` bodies: OpenAI's shape, plus what xinference-client sends."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from xinf.errors import InvalidRequest

MAX_PROMPT = 4000  # characters (OpenAI's limit for its newest image models)
MAX_SIDE = 2048
_SIZE = re.compile(r"^(\d+)\s*[x*×]\s*(\d+)$")


class ImageBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    prompt: Annotated[str, Meta(min_length=1, max_length=MAX_PROMPT)]
    n: Annotated[int, Meta(ge=1, le=10)] = 1
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    seed: Annotated[int, Meta(ge=0, le=(1 << 63) - 1)] | None = None
    negative_prompt: str | None = None
    num_inference_steps: Annotated[int, Meta(ge=1, le=500)] | None = None
    guidance_scale: Annotated[float, Meta(ge=0, le=50)] | None = None
    # image edits only: how far the result may move from the picture
    strength: Annotated[float, Meta(gt=0, le=1)] | None = None
    # xinference-client sends its extra arguments as a JSON string here (seed, num_inference_steps, ...).
    kwargs: str | dict[str, Any] | None = None
    # OpenAI's; accepted, not used by diffusion pipelines.
    quality: str | None = None
    style: str | None = None
    user: str | None = None


def parse_size(size: str | None) -> tuple[int, int]:
    """``"512x512"`` (OpenAI) or ``"512*512"`` (Xinference) -> (width, height); default 512x512."""
    if size is None:
        return 512, 512
    match = _SIZE.match(size.strip())
    if not match:
        raise InvalidRequest(f"size {size!r} is not WIDTHxHEIGHT (e.g. 512x512)", param="size")
    width, height = int(match.group(1)), int(match.group(2))
    if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
        raise InvalidRequest(f"size {size!r} is not supported: each side must be 8 to {MAX_SIDE} pixels", param="size")
    return width, height
