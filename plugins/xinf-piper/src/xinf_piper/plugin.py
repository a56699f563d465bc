"""The Piper engine plugin: Piper voices (an ``.onnx`` file with its ``.onnx.json``), format ``onnx``.

Hooks only; the runtime is ``engine.py`` (piper is imported in ``load``).
Launch options: ``threads`` (ONNX Runtime's intra-op threads; default: its own),
``noise_scale`` and ``noise_w_scale`` (the voice's defaults otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from xinf import hookimpl
from xinf.engine import Device, EngineMatch, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf.operations import AudioChunk, SpeechRequest

ENGINE = "piper"
MiB = 1 << 20


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.model_type != "audio" or "text2audio" not in spec.abilities:
        return EngineMatch(engine=ENGINE, score=0, reason="serves text-to-speech (text2audio) models only")
    if spec.format != "onnx":
        return EngineMatch(engine=ENGINE, score=0, reason=f"serves Piper voices (onnx), not {spec.format!r}")
    return EngineMatch(engine=ENGINE, score=50, reason="a Piper voice")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    from xinf_piper.engine import voice_file

    found = voice_file(Path(spec.source.path or ""))
    if found is None:
        return None
    weights = found.stat().st_size
    overhead = 128 * MiB  # ONNX Runtime's arena and one sentence of audio
    if devices:
        return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, per_device=[weights + overhead])
    return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, host=weights + overhead)


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    from xinf_piper.engine import PiperEngine

    return PiperEngine.load(spec, options, on_cuda=bool(placement.devices))


@hookimpl
async def speech(model: Any, request: SpeechRequest) -> AsyncIterator[AudioChunk]:
    async for chunk in model.speak(request):
        yield chunk


@hookimpl
def unload(model: Any) -> None:
    model.close()
