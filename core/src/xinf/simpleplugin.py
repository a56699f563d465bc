"""Shared pieces of the simple engine plugins: one model type, one format, one runtime (Whisper, Piper, diffusers).

Their ``match_model`` and ``estimate_vram`` hooks differ only in words and
numbers; these helpers keep the wording of refusals and the shape of estimates
the same across them.
"""

from __future__ import annotations

from xinf.types import Device, EngineMatch, MemoryEstimate, ModelSpec


def match_one_kind(
    engine: str,
    spec: ModelSpec,
    *,
    model_type: str,
    ability: str,
    served: str,
    model_format: str,
    format_words: str,
    reason: str,
    score: int = 50,
) -> EngineMatch:
    """Claim ``spec`` when it has ``model_type``, ``ability`` and ``model_format``; else say which it lacks.

    ``served`` names the ability in words ("speech-to-text"), ``format_words`` the
    format ("Piper voices"), ``reason`` why a match is a match ("a Piper voice").
    """
    if spec.model_type != model_type or ability not in spec.abilities:
        return EngineMatch(engine=engine, score=0, reason=f"serves {served} ({ability}) models only")
    if spec.format != model_format:
        return EngineMatch(
            engine=engine, score=0, reason=f"serves {format_words} ({model_format}), not {spec.format!r}"
        )
    return EngineMatch(engine=engine, score=score, reason=reason)


def weights_and_overhead(weights: int, overhead: int, devices: list[Device]) -> MemoryEstimate:
    """An estimate of weights plus a fixed overhead, on the one GPU a replica gets or else in host memory."""
    if devices:
        return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, per_device=[weights + overhead])
    return MemoryEstimate(weights=weights, kv_cache=0, overhead=overhead, host=weights + overhead)
