"""Images in chat through a real `xinf serve`: data: URLs, fetched URLs, the bounds and the errors a client sees.

The test engine's vision model (``describe_images``) answers with the media
type, size and hash of each image that reached it, so the tests see exactly
what the server handed the engine.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from xinf.testing.server import ServerProcess

MAX_BYTES = 4096


def png(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG file, written by hand (no imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def described(data: bytes, media_type: str = "image/png") -> str:
    return f"{media_type} {len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def ask(*urls: str, text: str = "What is in the picture?") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XINF_MAX_IMAGE_BYTES": str(MAX_BYTES), "XINF_MAX_IMAGES": "3"}
    with ServerProcess(tmp_path_factory.mktemp("vision"), env=env) as server:
        server.launch(model_name="xinf-test-vision", model_uid="eyes", describe_images=True)
        server.launch(model_name="xinf-test-chat", model_uid="text")
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return server.openai()


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}
    return body


def test_data_url_image_reaches_the_engine_as_its_bytes(client: openai.OpenAI) -> None:
    image = png()
    reply = client.chat.completions.create(model="eyes", messages=ask(data_url(image)), max_tokens=50)
    assert reply.choices[0].message.content == described(image)
    plain = client.chat.completions.create(model="eyes", messages=ask(), max_tokens=50)
    assert reply.usage.prompt_tokens == plain.usage.prompt_tokens + 1  # the test engine counts an image as a word


def test_the_media_type_is_read_from_the_bytes(client: openai.OpenAI) -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(40)
    gif = b"GIF89a" + bytes(20)
    webp = b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(20)
    urls = [data_url(jpeg, "image/png"), data_url(gif, "image/gif"), data_url(webp, "image/webp")]
    reply = client.chat.completions.create(model="eyes", messages=ask(*urls), max_tokens=50)
    expected = [described(jpeg, "image/jpeg"), described(gif, "image/gif"), described(webp, "image/webp")]
    assert reply.choices[0].message.content == "; ".join(expected)


def test_streamed_chat_with_an_image(client: openai.OpenAI) -> None:
    image = png(8, 8)
    stream = client.chat.completions.create(model="eyes", messages=ask(data_url(image)), max_tokens=50, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == described(image)


def test_image_parts_in_several_messages_keep_their_order(client: openai.OpenAI) -> None:
    first, second = png(1, 1), png(2, 2)
    messages = [
        *ask(data_url(first)),
        {"role": "assistant", "content": "A dot."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(second), "detail": "low"}}]},
    ]
    reply = client.chat.completions.create(model="eyes", messages=messages, max_tokens=50)
    assert reply.choices[0].message.content == f"{described(first)}; {described(second)}"


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        (data_url(b"not an image at all"), "invalid_image", "not a PNG, JPEG, WebP or GIF image"),
        ("data:image/png;base64,%%%not-base64%%%", "invalid_image", "base64 does not decode"),
        (data_url(png(), "image/bmp"), "unsupported_image", "'image/bmp' is not served"),
        ("data:image/png,rawbytes", None, "must be base64"),
        (data_url(bytes(MAX_BYTES + 1)), "image_too_large", "XINF_MAX_IMAGE_BYTES"),
        ("ftp://example.com/cat.png", None, "not 'ftp'"),
    ],
)
def test_a_bad_image_is_a_400_naming_the_problem(client: openai.OpenAI, url: str, code: str | None, words: str) -> None:
    body = error_of(lambda: client.chat.completions.create(model="eyes", messages=ask(url), max_tokens=5))
    assert words in body["message"]
    assert body["param"] == "messages[0].content[1].image_url"
    if code is not None:
        assert body["code"] == code


def test_too_many_images_is_a_400(client: openai.OpenAI) -> None:
    urls = [data_url(png())] * 4
    body = error_of(lambda: client.chat.completions.create(model="eyes", messages=ask(*urls), max_tokens=5))
    assert "XINF_MAX_IMAGES" in body["message"] and body["code"] == "too_many_images"


def test_http_urls_are_not_fetched_unless_the_operator_allows_it(client: openai.OpenAI) -> None:
    body = error_of(
        lambda: client.chat.completions.create(model="eyes", messages=ask("http://127.0.0.1:9/cat.png"), max_tokens=5)
    )
    assert "XINF_ALLOW_IMAGE_URLS=1" in body["message"] and body["code"] == "image_urls_disabled"


def test_an_image_to_a_model_without_vision_is_a_400_naming_it(client: openai.OpenAI) -> None:
    body = error_of(lambda: client.chat.completions.create(model="text", messages=ask(data_url(png())), max_tokens=5))
    assert "text" in body["message"] and "vision" in body["message"]


def test_anthropic_image_blocks(server: ServerProcess) -> None:
    image = png(5, 5)
    with anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0) as client:
        reply = client.messages.create(
            model="eyes",
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": base64.b64encode(image).decode(),
                            },
                        },
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        )
        assert reply.content[0].text == described(image)
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(
                model="eyes",
                max_tokens=5,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                        ],
                    }
                ],
            )
        assert "not a PNG, JPEG, WebP or GIF image" in info.value.body["error"]["message"]


# ---------------------------------------------------------------- fetched URLs


class _Images(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def images_site() -> Iterator[str]:
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()


def test_fetched_image_urls_when_allowed(tmp_path_factory: pytest.TempPathFactory, images_site: str) -> None:
    image = png(6, 6)
    _Images.files = {"/cat.png": image, "/big.png": png() + bytes(MAX_BYTES)}
    env = {"XINF_ALLOW_IMAGE_URLS": "1", "XINF_MAX_IMAGE_BYTES": str(MAX_BYTES)}
    with ServerProcess(tmp_path_factory.mktemp("fetching"), env=env) as server:
        server.launch(model_name="xinf-test-vision", model_uid="eyes", describe_images=True)
        client = server.openai()
        reply = client.chat.completions.create(model="eyes", messages=ask(f"{images_site}/cat.png"), max_tokens=50)
        assert reply.choices[0].message.content == described(image)
        missing = error_of(
            lambda: client.chat.completions.create(model="eyes", messages=ask(f"{images_site}/no.png"), max_tokens=5)
        )
        assert "HTTP 404" in missing["message"] and missing["code"] == "image_fetch_failed"
        big = error_of(
            lambda: client.chat.completions.create(model="eyes", messages=ask(f"{images_site}/big.png"), max_tokens=5)
        )
        assert big["code"] == "image_too_large"
