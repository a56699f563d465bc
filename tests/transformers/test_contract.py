"""The transformers plugin passes the engine contract, with batching on and off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xinf.testing.contract import EngineContract
from xinf.types import ModelSource, ModelSpec


def tiny_spec(path: Path) -> ModelSpec:
    return ModelSpec(
        name="qwen3-tiny",
        format="pytorch",
        abilities=["chat", "generate", "reasoning"],
        reasoning_start_tag="<think>",
        reasoning_end_tag="</think>",
        source=ModelSource(path=str(path)),
    )


class TestBatched(EngineContract):
    engine = "transformers"
    foreign_format = "ggufv2"
    overflow_words = 400  # the launch below serves 256 tokens of context

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls, qwen3_path: Path) -> ModelSpec:
        return tiny_spec(qwen3_path)

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return {"threads": 1, "context_length": 256, "max_num_seqs": 4}


class TestOneAtATime(TestBatched):
    """``max_num_seqs`` 1: plain generate(), no batching."""

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return {"threads": 1, "context_length": 256, "max_num_seqs": 1}
