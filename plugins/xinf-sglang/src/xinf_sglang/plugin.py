"""The ``sglang`` engine: SGLang's offline engine (RadixAttention, continuous batching) on CUDA.

It serves, as Xinference's rules for vLLM say but without fp4:

- format ``pytorch`` (unquantized), ``gptq`` (Int3, Int4, Int8), ``awq`` (Int4),
  ``fp8`` or ``bnb``;
- on Linux with at least one CUDA device (SGLang's kernels are CUDA-only);
- for a model family in ``models.FAMILIES``, or a local model whose
  ``config.json`` architecture is in ``models.ARCHITECTURES``.

Launch options are ``ServerArgs`` fields under their own names
(``--mem_fraction_static 0.8``, ``--context_length 8192``), plus a few aliases
other engines use (``max_num_seqs``, ``gpu_memory_utilization``,
``max_model_len``, ``tensor_parallel_size``, ``seed``); see ``args.py``.
SGLang pins its own torch and transformers: install it in its own environment.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xinf import hookimpl
from xinf.errors import LaunchError
from xinf.types import Chunk, Device, EngineMatch, GenerateRequest, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf_sglang.models import ARCHITECTURES, FAMILIES

if TYPE_CHECKING:
    from xinf_sglang.engine import SGLangModel

ENGINE = "sglang"
SCORE = 60  # below vLLM, which Xinference ranks first on CUDA
QUANTIZATIONS = {
    "pytorch": ("none",),
    "gptq": ("Int3", "Int4", "Int8"),
    "awq": ("Int4",),
    "fp8": None,  # any
    "bnb": None,
}


def installed() -> bool:
    # A directory named sglang on sys.path (tests/sglang under pytest) is a namespace package
    # without an origin: only the real package counts.
    spec = importlib.util.find_spec("sglang")
    return spec is not None and spec.origin is not None


def _decline(reason: str) -> EngineMatch:
    return EngineMatch(engine=ENGINE, score=0, reason=reason)


def architectures(spec: ModelSpec) -> list[str]:
    """The ``architectures`` of a model on local disk, else []."""
    path = spec.source.path
    if not path or not Path(path).is_dir():
        return []
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = config.get("architectures") if isinstance(config, dict) else None
    return [str(a) for a in found] if isinstance(found, list) else []


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.adapters:
        return _decline("the xinf SGLang engine serves no LoRA adapters yet; use vLLM, llama.cpp or transformers")
    if spec.model_type != "LLM" or not {"chat", "generate"} & set(spec.abilities):
        return _decline("serves text-generation models (chat or generate) only")
    if spec.format not in QUANTIZATIONS:
        return _decline(f"serves formats {', '.join(QUANTIZATIONS)}, not {spec.format!r}")
    allowed = QUANTIZATIONS[spec.format]
    if allowed is not None and spec.quantization.lower() not in {q.lower() for q in allowed}:
        return _decline(f"serves {spec.format} models quantized as {' or '.join(allowed)}, not {spec.quantization!r}")
    if hardware.system != "Linux":
        return _decline(f"SGLang runs on Linux only, not on {hardware.system}")
    if not hardware.has_cuda:
        return _decline("SGLang needs at least one CUDA device (its kernels are CUDA-only); none was found")
    family = (spec.family or spec.name).lower()
    if family not in FAMILIES:
        archs = architectures(spec)
        if not set(archs) & ARCHITECTURES:
            seen = f" (architecture {', '.join(archs)})" if archs else ""
            return _decline(f"model family {family!r}{seen} is not in SGLang's list of supported models")
    if not installed():
        return _decline("sglang is not installed here: pip install sglang, in an environment of its own")
    return EngineMatch(engine=ENGINE, score=SCORE, reason="SGLang on CUDA")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    from xinf_sglang import memory
    from xinf_sglang.args import server_kwargs

    if not spec.source.path or not Path(spec.source.path).is_dir():
        return None
    # Checking option names needs SGLang itself (load does it); the estimate reads the fields it knows.
    kwargs = server_kwargs(spec, options, Placement(devices=[d.index for d in devices]), fields=None)
    try:
        return memory.estimate(spec.source.path, kwargs, devices)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> SGLangModel:
    if not installed():
        raise LaunchError("sglang is not installed in this environment")
    from xinf_sglang.engine import SGLangModel

    return SGLangModel.load(spec, options, placement)


@hookimpl
def generate(model: SGLangModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    return model.generate(request)


@hookimpl
def unload(model: SGLangModel) -> None:
    model.close()
