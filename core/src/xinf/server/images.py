"""``POST /v1/images/generations`` (OpenAI's shape; xinference-client's ``text_to_image``) and the image files.

``response_format: url`` answers with links to ``GET /v1/images/files/{name}``:
the PNG files are kept under ``XINFERENCE_HOME/images`` (one hour; older ones
are removed as new ones are written).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from xinf.errors import InvalidRequest, NotFound
from xinf.operations import ImageRequest, ImageResult
from xinf.schemas_images import ImageBody, parse_size
from xinf.server.http import decode, json_response, read_body, validation_error
from xinf.server.state import state
from xinf.server.streams import until_disconnect
from xinf.server.types import model_for

KEEP_SECONDS = 3600
_NAME = re.compile(r"^[0-9a-f]{32}\.png$")


async def generations(request: Request) -> Response:
    st = state(request)
    body = merge_kwargs(decode(await read_body(request, st.max_body), ImageBody))
    if body.strength is not None:
        raise InvalidRequest("strength applies to image edits (POST /v1/images/edits)", param="strength")
    model = model_for(st, body.model, "text2image")
    width, height = parse_size(body.size)
    image = ImageRequest(width=width, height=height, **shared_fields(body))
    result: ImageResult = await until_disconnect(request, model.serve(image))
    return respond(request, result, body.response_format)


def shared_fields(body: ImageBody) -> dict[str, Any]:
    """What text-to-image and image-to-image requests take alike from a body."""
    return {
        "prompt": body.prompt,
        "n": body.n,
        "seed": body.seed,
        "negative_prompt": body.negative_prompt,
        "steps": body.num_inference_steps,
        "guidance_scale": body.guidance_scale,
    }


def respond(request: Request, result: ImageResult, response_format: str) -> Response:
    """OpenAI's images answer: base64 PNGs, or links to files kept for an hour."""
    if response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(png).decode()} for png in result.images]
    else:
        folder = _folder(state(request).settings.home)
        data = []
        for png in result.images:
            name = f"{uuid.uuid4().hex}.png"
            (folder / name).write_bytes(png)
            data.append({"url": str(request.url_for("image_file", name=name))})
    return json_response({"created": int(time.time()), "data": data})


async def image_file(request: Request) -> Response:
    name = request.path_params["name"]
    path = state(request).settings.home / "images" / name
    if not _NAME.match(name) or not path.is_file():
        raise NotFound(f"no image {name!r} (images are kept for {KEEP_SECONDS // 60} minutes)")
    return FileResponse(path, media_type="image/png")


def merge_kwargs(body: ImageBody) -> ImageBody:
    """xinference-client puts extra arguments in ``kwargs`` (a JSON string): they count as fields."""
    if not body.kwargs:
        return body
    try:
        extra: Any = json.loads(body.kwargs) if isinstance(body.kwargs, str) else body.kwargs
    except ValueError:
        raise InvalidRequest("kwargs must be a JSON object", param="kwargs") from None
    if not isinstance(extra, dict):
        raise InvalidRequest("kwargs must be a JSON object", param="kwargs")
    fields = {**msgspec.structs.asdict(body), **extra, "kwargs": None}
    try:
        return msgspec.convert(fields, ImageBody)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


def _folder(home: Path) -> Path:
    folder = home / "images"
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - KEEP_SECONDS
    for old in folder.glob("*.png"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass
    return folder
