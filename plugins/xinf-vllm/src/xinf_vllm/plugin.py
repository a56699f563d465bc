"""The ``vllm`` engine plugin: hook implementations.

This module imports nothing heavy: vLLM (and torch with it) is imported in
``load`` and ``generate``, which run in the replica process only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from xinf import hookimpl
from xinf.types import (
    Chunk,
    Device,
    EngineMatch,
    GenerateRequest,
    Hardware,
    LoraAdapter,
    MemoryEstimate,
    ModelSpec,
    Placement,
)
from xinf_vllm import engine, matching, memory


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    return matching.match(spec, hardware, matching.installed_build())


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    return memory.estimate(spec, options, devices, gpu_build=matching.installed_build() != "cpu")


@hookimpl
async def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> engine.VllmModel:
    return await engine.load(spec, options, placement)


@hookimpl
def generate(model: engine.VllmModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    return engine.generate(model, request)


@hookimpl
def unload(model: engine.VllmModel) -> None:
    engine.unload(model)


@hookimpl
async def update_adapters(model: engine.VllmModel, add: list[LoraAdapter], remove: list[str]) -> None:
    from xinf.adapters import as_adapters
    from xinf_vllm import lora

    await lora.update(model, as_adapters(add), remove)
