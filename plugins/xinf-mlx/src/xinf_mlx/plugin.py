"""The ``mlx`` engine: mlx-lm serving MLX-format models, continuously batched.

Where it serves:

- ``mlx`` format on Apple silicon: preferred (score 100).
- ``mlx`` format on Linux, where ``pip install "mlx[cpu]"`` runs MLX on the CPU
  (slowly): only when chosen explicitly (``--model-engine mlx``).
- Unquantized ``pytorch`` directories (config.json + safetensors): mlx-lm loads
  them directly, so they are served too, but only when chosen explicitly on any
  platform; the ``transformers`` engine is the default for them.

Launch options (``xinf launch ... --max_num_seqs 4``):

- ``context_length``: tokens of prompt plus output allowed per request
  (default: the model's ``max_position_embeddings``).
- ``max_num_seqs``: sequences decoded together in one batch (default 8).
- ``prefill_step_size``: prompt tokens processed per step (default 2048).
- ``max_kv_size``: cap each sequence's KV cache (a rotating cache) in tokens.
- ``trust_remote_code``: passed to mlx-lm's loader (default false).

mlx and mlx-lm are imported only in ``load`` (see ``engine.py``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from xinf import hookimpl
from xinf.types import Chunk, Device, EngineMatch, GenerateRequest, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf_mlx.options import parse_options

if TYPE_CHECKING:
    from xinf_mlx.engine import MLXModel

ENGINE = "mlx"
INSTALL = 'pip install mlx-lm (on Linux also "mlx[cpu]")'


def _installed(package: str) -> bool:
    # A directory of the same name on sys.path (tests/mlx under pytest) looks like a namespace package
    # without an origin: only a real package counts.
    spec = importlib.util.find_spec(package)
    return spec is not None and spec.origin is not None


def _decline(reason: str, *, explicit_only: bool = False) -> EngineMatch:
    return EngineMatch(engine=ENGINE, score=0, reason=reason, explicit_only=explicit_only)


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.adapters:
        # mlx-lm fuses one adapter (in its own format) into the model: no per-request choice among several.
        return _decline("serves no LoRA adapters here; use llama.cpp (GGUF adapters) or transformers (PEFT adapters)")
    if spec.model_type != "LLM" or not {"chat", "generate"} & set(spec.abilities):
        return _decline("serves text-generation models (chat or generate) only")
    if spec.format not in ("mlx", "pytorch"):
        return _decline(
            f"serves MLX-format models (and, when chosen explicitly, unquantized Hugging Face "
            f"directories), not format {spec.format!r}"
        )
    if spec.format == "pytorch" and spec.quantization not in ("none", ""):
        return _decline(f"loads pytorch checkpoints only unquantized, not {spec.quantization!r}: convert it to MLX")
    if not hardware.apple_silicon and hardware.system != "Linux":
        return _decline(
            f"MLX runs on Apple silicon and (CPU only) on Linux, not on {hardware.system} {hardware.machine}"
        )
    if not _installed("mlx_lm"):  # mlx-lm requires mlx itself
        return _decline(f"mlx-lm is not installed here: {INSTALL}")
    if spec.format == "pytorch":
        return _decline(
            "mlx-lm loads this Hugging Face directory directly, but serves it only when chosen "
            "explicitly (--model-engine mlx); transformers is the default engine for it",
            explicit_only=True,
        )
    if not hardware.apple_silicon:
        return _decline(
            f"MLX runs on {hardware.system} on the CPU only (mlx[cpu]) and slowly: it serves only when "
            "chosen explicitly (--model-engine mlx)",
            explicit_only=True,
        )
    return EngineMatch(engine=ENGINE, score=100, reason="mlx-lm on Apple silicon")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    from xinf_mlx import memory

    opts = parse_options(options)
    if not spec.source.path:
        return None
    try:
        weights, kv, overhead = memory.estimate(
            spec.source.path,
            context_length=opts.context_length or spec.context_length,
            max_num_seqs=opts.max_num_seqs,
            prefill_step_size=opts.prefill_step_size,
            max_kv_size=opts.max_kv_size,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no readable config.json: the scheduler places by device count
    if weights == 0:
        return None
    # MLX never uses CUDA devices: Apple silicon's memory is unified, Linux runs on the CPU.
    return MemoryEstimate(weights=weights, kv_cache=kv, overhead=overhead, host=weights + kv + overhead)


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> MLXModel:
    from xinf_mlx.engine import MLXModel

    return MLXModel.load(spec, parse_options(options))


@hookimpl
def generate(model: MLXModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    return model.generate(request)


@hookimpl
def unload(model: MLXModel) -> None:
    model.close()
