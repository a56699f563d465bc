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
from xinf.simpleplugin import match_one_kind, weights_and_overhead

ENGINE = "piper"
MiB = 1 << 20


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    return match_one_kind(
        ENGINE,
        spec,
        model_type="audio",
        ability="text2audio",
        served="text-to-speech",
        model_format="onnx",
        format_words="Piper voices",
        reason="a Piper voice",
    )


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    from xinf_piper.engine import voice_file

    found = voice_file(Path(spec.source.path or ""))
    if found is None:
        return None
    weights = found.stat().st_size
    overhead = 128 * MiB  # ONNX Runtime's arena and one sentence of audio
    return weights_and_overhead(weights, overhead, devices)


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
