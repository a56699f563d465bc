"""The ngram engine passes xinf's engine contract: every hook, called as the server and a replica call it."""

from __future__ import annotations

import pytest

from xinf.testing.contract import EngineContract
from xinf.types import ModelSource, ModelSpec
from xinf_ngram.plugin import corpus_path


class TestNgram(EngineContract):
    engine = "ngram"  # the entry point's name
    overflow_words = 2000  # a prompt this long is over the default context_length (1024 words)

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls) -> ModelSpec:
        return ModelSpec(name="sea", format="ngram", source=ModelSource(path=str(corpus_path())))

    @pytest.fixture(scope="class")
    @classmethod
    def embed_spec(cls) -> ModelSpec:
        return ModelSpec(
            name="sea-embed",
            format="ngram",
            abilities=["embed"],
            model_type="embedding",
            source=ModelSource(path=str(corpus_path())),
        )
