"""Launch options as xinf sees them, and the defaults xinf passes to vLLM.

Every launch option that names a field of vLLM's ``AsyncEngineArgs`` goes to
vLLM as is (checked at load, where vLLM is imported).  The few read here
decide the memory estimate; ``load`` passes the same resolved values to vLLM,
so the estimate and the engine agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec

from xinf.errors import LaunchError
from xinf.types import ModelSpec

# vLLM's default; the fraction of each GPU's total memory it takes for itself.
GPU_MEMORY_UTILIZATION = 0.9
# vLLM's default on most GPUs; on CPU a handful of sequences is all two cores can batch.
MAX_NUM_SEQS_GPU = 256
MAX_NUM_SEQS_CPU = 8
# vLLM's default prefill chunk on GPUs under 70 GiB (the activation peak is sized for it).
MAX_NUM_BATCHED_TOKENS = 2048
# vLLM's KV block size on CPU (its platform sets it when the user does not).
CPU_BLOCK_SIZE = 128
# Keys vLLM reads the context length from; it takes the smallest present.
_MAX_LEN_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


class Settings(msgspec.Struct, kw_only=True):
    """The options that size a replica; None means "derive it"."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    tensor_parallel_size: int | None = None
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None


def parse(options: dict[str, Any]) -> Settings:
    known = {k: v for k, v in options.items() if k in Settings.__struct_fields__}
    try:
        settings = msgspec.convert(known, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise LaunchError(f"invalid vLLM option: {exc}") from None
    if not 0 < settings.gpu_memory_utilization <= 1:
        raise LaunchError(
            f"gpu_memory_utilization must be in (0, 1], not {settings.gpu_memory_utilization}",
            param="gpu_memory_utilization",
        )
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise LaunchError(f"{name} must be at least 1, not {value}", param=name)
    return settings


def read_config(spec: ModelSpec) -> dict[str, Any] | None:
    """The model's ``config.json`` (its text part for multimodal models), if it is on disk."""
    path = spec.source.path
    if not path:
        return None
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")
    if isinstance(text, dict):
        # Multimodal configs keep the language model's shape apart; dtype may sit on either.
        return {"torch_dtype": config.get("torch_dtype") or config.get("dtype"), **text}
    return config


def config_max_len(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    values = [int(config[k]) for k in _MAX_LEN_KEYS if isinstance(config.get(k), (int, float))]
    return min(values) if values else None


def max_model_len(settings: Settings, spec: ModelSpec, config: dict[str, Any] | None) -> int | None:
    """The context length xinf asks vLLM for: the option, else what vLLM derives from the config."""
    if settings.max_model_len is not None:
        return settings.max_model_len
    return config_max_len(config) or spec.context_length


def max_num_seqs(settings: Settings, on_gpu: bool) -> int:
    if settings.max_num_seqs is not None:
        return settings.max_num_seqs
    return MAX_NUM_SEQS_GPU if on_gpu else MAX_NUM_SEQS_CPU


def round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple
