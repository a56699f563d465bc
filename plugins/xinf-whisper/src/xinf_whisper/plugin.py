"""The faster-whisper engine plugin: Whisper models converted for CTranslate2 (format ``ctranslate2``).

Hooks only; the runtime is ``engine.py`` (faster-whisper is imported in ``load``).
Launch options: ``compute_type`` (default ``int8`` on CPU, ``float16`` on CUDA),
``cpu_threads`` (default: CTranslate2's), ``beam_size`` (default 5), ``vad_filter``
(default false).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from xinf import hookimpl
from xinf.engine import Device, EngineMatch, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf.operations import TranscribeRequest, TranscribeResult, TranscribeStreamRequest, TranscriptPiece
from xinf.simpleplugin import match_one_kind, weights_and_overhead

ENGINE = "faster-whisper"
MiB = 1 << 20


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    return match_one_kind(
        ENGINE,
        spec,
        model_type="audio",
        ability="audio2text",
        served="speech-to-text",
        model_format="ctranslate2",
        format_words="Whisper converted for CTranslate2",
        reason="Whisper in CTranslate2 format",
    )


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    """The weights as stored (int8 compute on CPU halves float16 ones) plus decoding buffers."""
    path = Path(spec.source.path or "")
    files = [path / "model.bin"] if (path / "model.bin").exists() else []
    if not files:
        return None
    weights = sum(f.stat().st_size for f in files)
    overhead = 256 * MiB  # mel features, beam search state, the CTranslate2 allocator
    return weights_and_overhead(weights, overhead, devices)


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    from xinf_whisper.engine import WhisperEngine

    return WhisperEngine.load(spec, options, on_cuda=bool(placement.devices))


@hookimpl
async def transcribe(model: Any, request: TranscribeRequest) -> TranscribeResult:
    return await model.transcribe(request)


@hookimpl
async def transcribe_stream(model: Any, request: TranscribeStreamRequest) -> AsyncIterator[TranscriptPiece]:
    async for piece in model.stream(request):
        yield piece


@hookimpl
def unload(model: Any) -> None:
    model.close()
