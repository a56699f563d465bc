"""The test engine passes the same contract every engine plugin must pass."""

from __future__ import annotations

import pytest

from xinf.registry import Registry
from xinf.testing.contract import EngineContract
from xinf.types import ModelSpec


class TestTestEngine(EngineContract):
    engine = "test"
    foreign_format = "ggufv2"
    overflow_words = 5000

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls) -> ModelSpec:
        return Registry(None).candidates("xinf-test-chat")[0]

    @pytest.fixture(scope="class")
    @classmethod
    def embed_spec(cls) -> ModelSpec:
        return Registry(None).candidates("xinf-test-embed")[0]
