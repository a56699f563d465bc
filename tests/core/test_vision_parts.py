"""The plain image parts engines get (``xinf.vision``) and the prompt helper's refusal of images."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from xinf import vision
from xinf.errors import InvalidRequest
from xinf.prompts import render_chat
from xinf.types import GenerateRequest, ModelSpec

PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)
IMAGE = vision.image_part(vision.Image("image/png", PNG))
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]},
]


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xdb" + bytes(8), "image/jpeg"),
        (b"GIF87a" + bytes(8), "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),  # a RIFF file that is not WebP
        (b"BM" + bytes(8), None),  # BMP: not served
        (b"", None),
    ],
)
def test_sniff(data: bytes, media_type: str | None) -> None:
    assert vision.sniff(data) == media_type


def test_images_are_listed_in_order_and_rewritten_for_each_kind_of_engine() -> None:
    assert vision.has_images(MESSAGES) and not vision.has_images(MESSAGES[:1])
    assert vision.images_of(MESSAGES) == [vision.Image("image/png", PNG)]
    assert vision.placeholders(MESSAGES)[1]["content"][0] == {"type": "image"}
    url = vision.as_data_urls(MESSAGES)[1]["content"][0]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert MESSAGES[1]["content"][0] is IMAGE  # the request's own messages are left as they were


class Template:
    """A tokenizer stand-in that shows what its chat template is given."""

    chat_template = "given"

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return repr(messages)


def test_render_chat_refuses_images_unless_the_engine_passes_them_itself() -> None:
    spec = ModelSpec(name="some-vl", format="pytorch", abilities=["chat", "vision"])
    request = GenerateRequest(messages=MESSAGES)
    with pytest.raises(InvalidRequest) as info:
        render_chat(Template(), spec, request)
    assert "some-vl" in info.value.message and info.value.code == "images_not_supported"
    rendered = render_chat(Template(), spec, request, images=True)
    assert "{'type': 'image'}" in rendered and "PNG" not in rendered  # a placeholder, not the bytes
