"""Image to image: ``POST /v1/images/edits`` (OpenAI's multipart shape; xinference-client's ``image_edit``) and
``/v1/images/variations`` (xinference-client's ``image_to_image``), both redrawing one uploaded picture after a prompt.

The form's text fields are those of ``/v1/images/generations`` (and ``strength``);
xinference-client's ``kwargs`` JSON counts as fields.  Masks (inpainting) are refused.
"""

from __future__ import annotations

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from xinf.errors import InvalidRequest
from xinf.operations import ImageEditRequest, ImageResult
from xinf.schemas_images import ImageBody, parse_size
from xinf.server.http import check_multipart, validation_error
from xinf.server.images import merge_kwargs, respond, shared_fields
from xinf.server.state import state
from xinf.server.streams import until_disconnect
from xinf.server.types import model_for

IMAGE_FIELDS = ("image", "image[]", "images", "images[]")  # OpenAI; xinference-client's image_edit


async def edits(request: Request) -> Response:
    st = state(request)
    check_multipart(request, st.max_body, "image", "the picture")
    async with request.form(max_files=8, max_fields=64) as form:
        if form.get("mask") is not None:
            raise InvalidRequest("masks (inpainting) are not supported: send an image and a prompt", param="mask")
        uploads = [v for k, v in form.multi_items() if k in IMAGE_FIELDS and isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidRequest("the picture is missing: send it in the 'image' field", param="image")
        picture = await uploads[0].read()  # the first is the one redrawn; reference pictures are not used here
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and k not in IMAGE_FIELDS}
    try:
        body = merge_kwargs(msgspec.convert(fields, ImageBody, strict=False))
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    model = model_for(st, body.model, "text2image")
    if not picture:
        raise InvalidRequest("the picture is empty", param="image")
    width, height = parse_size(body.size) if body.size else (None, None)
    edit = ImageEditRequest(image=picture, width=width, height=height, strength=body.strength, **shared_fields(body))
    result: ImageResult = await until_disconnect(request, model.serve(edit))
    return respond(request, result, body.response_format)
