"""The faster-whisper engine plugin: Whisper models converted for CTranslate2 (format ``ctranslate2``).

Hooks only; the runtime is ``engine.py`` (faster-whisper is imported in ``load``).
Launch options: ``compute_type`` (default ``int8`` on CPU, ``float16`` on CUDA),
``cpu_threads`` (default: CTranslate2's), ``beam_size`` (default 5), ``vad_filter``
(default false).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xinf import hookimpl
from xinf.engine import Device, EngineMatch, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf.operations import TranscribeRequest, TranscribeResult

ENGINE = "faster-whisper"
MiB = 1 << 20


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.model_type != "audio" or "audio2text" not in spec.abilities:
        return EngineMatch(engine=ENGINE, score=0, reason="serves speech-to-text (audio2text) models only")
    if spec.format != "ctranslate2":
        return EngineMatch(
            engine=ENGINE,
            score=0,
            reason=f"serves Whisper converted for CTranslate2 (ctranslate2), not {spec.format!r}",
        )
    return EngineMatch(engine=ENGINE, score=50, reason="Whisper in CTranslate2 format")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    """The weights as stored (int8 compute on CPU halves float16 ones) plus decoding buffers."""
    path = Path(spec.source.path or "")
    files = [path / "model.bin"] if (path / "model.bin").exists() else []
    if not files:
        return None
    weights = sum(f.stat().st_size for f in files)
    overhead = 256 * MiB  # mel features, beam search state, the CTranslate2 allocator
    if devices:
        return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, per_device=[weights + overhead])
    return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, host=weights + overhead)


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    from xinf_whisper.engine import WhisperEngine

    return WhisperEngine.load(spec, options, on_cuda=bool(placement.devices))


@hookimpl
async def transcribe(model: Any, request: TranscribeRequest) -> TranscribeResult:
    return await model.transcribe(request)


@hookimpl
def unload(model: Any) -> None:
    model.close()
