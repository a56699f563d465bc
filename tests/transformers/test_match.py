"""Which models the transformers engine claims, and what it says when it declines."""

from __future__ import annotations

import importlib.util

import pytest

from xinf.types import Device, Hardware, ModelSpec
from xinf_transformers.plugin import match_model

CPU = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=1 << 34, memory_available=1 << 34)
GPU = Hardware(
    system="Linux",
    machine="x86_64",
    cpu_count=16,
    memory_total=1 << 37,
    memory_available=1 << 37,
    devices=[Device(index=0, name="H100", total_memory=80 << 30, free_memory=80 << 30)],
)


def test_pytorch_on_cpu_and_cuda() -> None:
    spec = ModelSpec(name="m", format="pytorch")
    assert match_model(spec=spec, hardware=CPU).score > match_model(spec=spec, hardware=GPU).score > 0


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_bnb_needs_its_library() -> None:
    answer = match_model(spec=ModelSpec(name="m", format="bnb"), hardware=GPU)
    assert not answer.ok and "pip install bitsandbytes" in answer.reason


def test_gguf_declined_with_reason() -> None:
    answer = match_model(spec=ModelSpec(name="m", format="ggufv2"), hardware=CPU)
    assert not answer.ok and "pytorch" in answer.reason
