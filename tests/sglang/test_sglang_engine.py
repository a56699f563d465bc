"""SGLang for real: the engine contract in-process and a real `xinf serve`. Needs SGLang and a CUDA GPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import tinymodels

from xinf.devices import inventory
from xinf.testing.contract import EngineContract
from xinf.testing.server import ServerProcess
from xinf.types import ModelSource, ModelSpec

pytestmark = pytest.mark.gpu
if not inventory().has_cuda:
    pytest.skip("SGLang needs a CUDA device", allow_module_level=True)
pytest.importorskip("sglang.srt.entrypoints.engine")

# A small static fraction and no CUDA graphs: the tiny model starts in seconds and leaves the GPU to others.
OPTIONS = {"mem_fraction_static": 0.3, "context_length": 1024, "disable_cuda_graph": True}


class TestSGLangEngine(EngineContract):
    engine = "sglang"
    foreign_format = "ggufv2"
    overflow_words = 1500

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls) -> ModelSpec:
        path = tinymodels.ensure("qwen3-tiny")  # Qwen3ForCausalLM: in SGLang's list by architecture
        return ModelSpec(name="qwen3-tiny", format="pytorch", source=ModelSource(path=str(path)))

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return dict(OPTIONS)


def test_served_through_xinf(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(startup_timeout=120)
    server.launch(model_path=str(tinymodels.ensure("qwen3-tiny")), model_uid="tiny", model_engine="sglang", **OPTIONS)
    client = server.openai()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(
        model="tiny", messages=question, max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 8 and reply.choices[0].finish_reason == "length"
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=question,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8
