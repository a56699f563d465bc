"""The llama.cpp plugin passes the engine contract on the real SmolLM2-135M GGUF."""

from __future__ import annotations

from typing import Any

import pytest
from llamacpp_models import smollm2_spec

from xinf.testing.contract import EngineContract
from xinf.types import ModelSpec


class TestLlamaCpp(EngineContract):
    engine = "llama.cpp"
    foreign_format = "pytorch"
    # 1024 cells over 2 slots: 512 tokens per request; 2000 words are far more.
    overflow_words = 2000

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls) -> ModelSpec:
        return smollm2_spec()

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return {"n_ctx": 1024, "n_parallel": 2, "n_threads": 1}
