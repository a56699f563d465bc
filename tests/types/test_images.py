"""POST /v1/images/generations against a real `xinf serve`: a tiny random-weight Stable Diffusion pipeline of the
real architecture through the diffusers engine, with XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE batching 64x64 requests."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("torch")

import tinymodels_diffusers
from PIL import Image

from xinf.testing.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tinymodels_diffusers.ensure()
    env = {"XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE": "64*64", "XINFERENCE_BATCH_INTERVAL": "1.0"}
    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"), env=env)
    server.start()
    try:
        server.launch(model_path=str(path), model_type="image", model_uid="img", num_inference_steps=2, threads=1)
        yield server
    finally:
        server.stop()


def pixels(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def same_picture(a: bytes, b: bytes) -> bool:
    x, y = pixels(a).tobytes(), pixels(b).tobytes()
    return len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y)) <= 2


def generate(server: ServerProcess, **body: object) -> list[bytes]:
    response = server.http.post("/v1/images/generations", json={"model": "img", "response_format": "b64_json", **body})
    assert response.status_code == 200, response.text
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def test_openai_sdk_b64_images_of_the_asked_size_and_seed(server: ServerProcess) -> None:
    client = server.openai()
    out = client.images.generate(
        model="img", prompt="a red barn", n=2, size="48x48", response_format="b64_json", extra_body={"seed": 7}
    )
    images = [base64.b64decode(d.b64_json) for d in out.data]
    assert [pixels(p).size for p in images] == [(48, 48), (48, 48)]
    again = client.images.generate(
        model="img", prompt="a red barn", n=1, size="48x48", response_format="b64_json", extra_body={"seed": 7}
    )
    # same seed, same image (alone or as the first of two, up to float rounding in a batch of two: at most 2 levels)
    assert same_picture(base64.b64decode(again.data[0].b64_json), images[0])
    assert images[0] != images[1]  # the second image of a request has the next seed


def test_url_response_serves_the_png(server: ServerProcess) -> None:
    out = server.openai().images.generate(model="img", prompt="a boat", size="32x32", response_format="url")
    url = out.data[0].url
    assert url.startswith(server.url + "/v1/images/files/")
    fetched = server.http.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert pixels(fetched.content).size == (32, 32)
    assert server.http.get("/v1/images/files/nothing.png").status_code == 404


def test_xinference_client_text_to_image(server: ServerProcess) -> None:
    from xinference_client import RESTfulClient

    model = RESTfulClient(server.url).get_model("img")
    out = model.text_to_image("a green field", n=1, size="40*40", response_format="b64_json", seed=3)
    first = base64.b64decode(out["data"][0]["b64_json"])
    assert pixels(first).size == (40, 40)
    assert generate(server, prompt="a green field", size="40x40", seed=3) == [first]  # kwargs' seed was used


def test_same_size_requests_are_batched_and_give_the_same_images(server: ServerProcess) -> None:
    alone = generate(server, prompt="a lighthouse", size="64x64", seed=11)[0]
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(generate, server, prompt=p, size="64x64", seed=s)
            for p, s in (("a lighthouse", 11), ("a castle", 12), ("a bridge", 13))
        ]
        results = [f.result()[0] for f in futures]
    assert same_picture(alone, results[0])  # batched: the same image
    described = server.http.get("/v1/models/img").json()
    log = Path(described["replicas"][0]["log"])
    deadline = time.monotonic() + 10
    while "one pipeline call for 3 requests (3 images)" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "one pipeline call for 3 requests (3 images)" in log.read_text()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "size": "64x60"}, "size"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "4096x4096"}, "size"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "kwargs": "[1]"}, "kwargs"),
    ],
)
def test_bad_image_requests_are_400(server: ServerProcess, body: dict, param: str) -> None:
    response = server.http.post("/v1/images/generations", json={"model": "img", "size": "32x32", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_metrics_count_image_requests(server: ServerProcess) -> None:
    metrics = server.http.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith('xinf_requests_total{model="img"'))
    assert float(line.split()[-1]) >= 5
    images = next(x for x in metrics.splitlines() if x.startswith('xinf_served_units_total{model="img"'))
    assert 'unit="images"' in images and float(images.split()[-1]) >= 7


def test_image_to_image_with_the_openai_sdk_and_xinference_client(server: ServerProcess) -> None:
    """POST /v1/images/edits (OpenAI) and /variations (xinference-client's image_to_image) redraw a picture."""
    start = generate(server, prompt="a red barn", size="48x40", seed=5)[0]
    client = server.openai()
    out = client.images.edit(
        model="img", image=("barn.png", start), prompt="a blue barn", response_format="b64_json", extra_body={"seed": 9}
    )
    edited = base64.b64decode(out.data[0].b64_json)
    assert pixels(edited).size == (48, 40)  # the picture's size
    assert edited != start
    again = server.http.post(
        "/v1/images/edits",
        files={"image": ("barn.png", start)},
        data={"model": "img", "prompt": "a blue barn", "seed": "9", "response_format": "b64_json"},
    )
    assert base64.b64decode(again.json()["data"][0]["b64_json"]) == edited  # same seed, same picture

    from xinference_client import RESTfulClient

    model = RESTfulClient(server.url).get_model("img")
    varied = model.image_to_image(start, "a blue barn", size="32*32", response_format="b64_json", seed=9, strength=0.5)
    assert pixels(base64.b64decode(varied["data"][0]["b64_json"])).size == (32, 32)
    edit = model.image_edit(start, "a blue barn", response_format="b64_json", seed=9)  # sends the picture as "images"
    assert base64.b64decode(edit["data"][0]["b64_json"]) == edited


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"image": ("x.png", b"not a picture")}, {}, "image"),
        ({}, {}, "image"),
        ({"image": ("x.png", b"x"), "mask": ("m.png", b"x")}, {}, "mask"),
        (None, {"size": "60x60"}, "size"),
        (None, {"strength": "1.5"}, "strength"),
    ],
)
def test_bad_image_edits_are_400(server: ServerProcess, files: dict | None, data: dict, param: str) -> None:
    if files is None:
        files = {"image": ("x.png", generate(server, prompt="x", size="16x16", seed=1)[0])}
    response = server.http.post(
        "/v1/images/edits", files=files or {"unused": ("", b"")}, data={"model": "img", "prompt": "x", **data}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
