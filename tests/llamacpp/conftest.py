"""Fixtures for the llama.cpp engine tests."""

from __future__ import annotations

import pytest

pytest.importorskip("xinf_llamacpp", reason="the llama.cpp plugin is not installed")

from llamacpp_models import smollm2_spec

from xinf.types import ModelSpec


@pytest.fixture(scope="session")
def smollm2() -> ModelSpec:
    return smollm2_spec()
