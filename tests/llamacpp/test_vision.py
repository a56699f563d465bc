"""Images in chat on llama.cpp: a tiny GGUF language model with a tiny generated projector (mmproj), real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("xllamacpp")
pytest.importorskip("PIL")

import tinymodels
import tinymodels_mmproj

from xinf.testing.images import QUESTION, ask, picture, stream_ask
from xinf.testing.server import ServerProcess


@pytest.fixture(scope="module")
def files() -> tuple[Path, Path]:
    return tinymodels.ensure("gguf-tiny"), tinymodels_mmproj.ensure(text_hidden=tinymodels.PRESETS["tiny"].hidden)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: tuple[Path, Path]) -> Iterator[ServerProcess]:
    model, projector = files
    with ServerProcess(tmp_path_factory.mktemp("llamacpp-vision")) as server:
        common = {"model_path": str(model), "model_engine": "llama.cpp", "n_parallel": 2, "n_threads": 1}
        server.launch(model_uid="eyes", multimodal_projector=str(projector), **common)
        server.launch(model_uid="blind", **common)
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return server.openai()


def chat(client: openai.OpenAI, messages: list[dict[str, Any]], model: str = "eyes", **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=messages, max_tokens=5, temperature=0, extra_body={"ignore_eos": True}, **extra
    )


def test_a_launch_with_a_projector_has_the_vision_ability(server: ServerProcess) -> None:
    assert "vision" in server.http.get("/v1/models/eyes").json()["model_ability"]
    assert "vision" not in server.http.get("/v1/models/blind").json()["model_ability"]


def test_each_image_adds_its_tokens_to_the_prompt(client: openai.OpenAI) -> None:
    plain = chat(client, [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    one = chat(client, ask(picture((200, 30, 30))))
    two = chat(client, ask(picture((200, 30, 30)), picture((20, 30, 200), kind="JPEG")))
    per_image = tinymodels_mmproj.TOKENS_PER_IMAGE
    assert one.usage.prompt_tokens == plain.usage.prompt_tokens + per_image
    assert two.usage.prompt_tokens == plain.usage.prompt_tokens + 2 * per_image
    assert one.usage.completion_tokens == 5 and isinstance(one.choices[0].message.content, str)


def test_streaming_with_an_image(client: openai.OpenAI) -> None:
    finish, usage, _ = stream_ask(client, "eyes", picture((10, 200, 10)), max_tokens=6)
    assert finish == "length" and usage.completion_tokens == 6
    assert usage.prompt_tokens > tinymodels_mmproj.TOKENS_PER_IMAGE


def test_an_image_that_does_not_decode_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, ask(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64))
    assert "Failed to load image" in info.value.body["message"]  # llama.cpp's own words
    assert chat(client, ask(picture((1, 2, 3)))).usage.completion_tokens == 5  # the model still serves


def test_images_to_the_model_launched_without_a_projector_are_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, ask(picture((1, 2, 3))), model="blind")
    assert "blind" in info.value.body["message"] and "vision" in info.value.body["message"]


def test_a_projector_that_is_not_there_fails_the_launch(server: ServerProcess, files: tuple[Path, Path]) -> None:
    response = server.http.post(
        "/v1/models",
        json={"model_path": str(files[0]), "model_uid": "lost", "multimodal_projector": "no-such-mmproj.gguf"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "multimodal_projector" and "no-such-mmproj.gguf" in error["message"]
    assert httpx.codes.NOT_FOUND == server.http.get("/v1/models/lost").status_code
