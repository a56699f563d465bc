"""Memory estimate for an SGLang replica, from the model directory and the devices.

SGLang does not size memory by request: on each GPU it takes the fraction
``mem_fraction_static`` of the device for the weights plus a KV-cache pool that
fills the rest of that fraction, and keeps a reserve outside it for activations
and CUDA graphs.  So per device:

    static   = mem_fraction_static x device memory     (weights / tp + KV pool)
    reserve  = SGLang's activation and CUDA-graph reserve
    need     = static + reserve                         (at most the device)

and the KV cache is what is left of the static part once the weights are in.
When ``mem_fraction_static`` is not given, SGLang derives it from the device's
memory: the rule here is a port of ``handle_gpu_memory_settings`` in SGLang
0.5's ``arg_groups/memory_hook.py`` (chunked-prefill size and decode CUDA-graph
batch by device size; the multimodal, speculative and DP-attention adjustments
are left out).  The model fits when the weights plus one full-context
sequence's KV cache fit in the static part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xinf.types import Device, MemoryEstimate

MiB = 1 << 20
GiB = 1 << 30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
KV_DTYPE_BYTES = {"fp8_e4m3": 1, "fp8_e5m2": 1, "fp8": 1, "fp4_e2m1": 0.5, "bfloat16": 2, "float16": 2, "float32": 4}


def read_config(path: str | Path) -> dict[str, Any]:
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def kv_bytes_per_token(config: dict[str, Any], kv_cache_dtype: str = "auto") -> float:
    """Keys plus values of one token across all layers."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    if kv_cache_dtype == "auto":
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
        size: float = DTYPE_BYTES.get(dtype, 2)
    else:
        size = KV_DTYPE_BYTES.get(kv_cache_dtype, 2)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * size


def prefill_and_graph_defaults(memory_mib: float, tp: int) -> tuple[int, int]:
    """SGLang's default ``chunked_prefill_size`` and decode CUDA-graph max batch for a device size."""
    if memory_mib < 20 * 1024:
        return 2048, 8
    if memory_mib < 35 * 1024:
        return 4096, 48 if tp < 4 else 160
    if memory_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if memory_mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def reserve_mib(memory_mib: float, tp: int, chunked_prefill_size: int | None, max_running: int | None) -> float:
    """SGLang's reserve for activations and CUDA graphs on one device, in MiB."""
    chunked, max_bs = prefill_and_graph_defaults(memory_mib, tp)
    chunked = chunked_prefill_size or chunked
    if max_running is not None:
        max_bs = min(max_bs, max_running)
    reserved = 512 + max(chunked, 2048) * 1.5 + tp / 8 * 1024 + max_bs * 2
    if memory_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return reserved


def default_fraction(memory: int, tp: int, chunked_prefill_size: int | None, max_running: int | None) -> float:
    memory_mib = memory / MiB
    return round((memory_mib - reserve_mib(memory_mib, tp, chunked_prefill_size, max_running)) / memory_mib, 3)


def estimate(path: str | Path, kwargs: dict[str, Any], devices: list[Device]) -> MemoryEstimate:
    """The estimate for ServerArgs ``kwargs`` (after option translation) on ``devices``."""
    config = read_config(path)
    weights = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    context = int(kwargs.get("context_length") or config.get("max_position_embeddings") or 4096)
    one_sequence = int(kv_bytes_per_token(config, str(kwargs.get("kv_cache_dtype") or "auto")) * context)
    chunked = kwargs.get("chunked_prefill_size")
    max_running = kwargs.get("max_running_requests")
    if not devices:  # SGLang needs CUDA: say what the smallest device would have to hold
        reserve = int(reserve_mib(0, 1, chunked, max_running) * MiB)
        return MemoryEstimate(
            weights=weights,
            kv_cache=one_sequence,
            overhead=reserve,
            note="no CUDA device: weights, one full-context sequence's KV cache and SGLang's smallest reserve",
        )
    tp = len(devices)
    fraction = kwargs.get("mem_fraction_static")
    statics: list[int] = []
    reserves: list[int] = []
    for device in devices:
        frac = float(fraction) if fraction else default_fraction(device.total_memory, tp, chunked, max_running)
        statics.append(int(frac * device.total_memory))
        reserve = int(reserve_mib(device.total_memory / MiB, tp, chunked, max_running) * MiB)
        reserves.append(min(reserve, device.total_memory - statics[-1]))
    pool = sum(statics) - weights
    if pool >= one_sequence:
        return MemoryEstimate(
            weights=weights,
            kv_cache=pool,
            overhead=sum(reserves),
            per_device=[s + r for s, r in zip(statics, reserves)],
            note=f"KV pool of {pool / GiB:.2f} GiB: {pool // max(one_sequence, 1)} full {context}-token sequences",
        )
    # What it needs at the least; SGLang itself would refuse to start with this fraction.
    return MemoryEstimate(
        weights=weights,
        kv_cache=one_sequence,
        overhead=sum(reserves),
        per_device=[(weights + one_sequence) // tp + r for r in reserves],
        note=f"does not fit: the weights ({weights / GiB:.2f} GiB) and one {context}-token sequence's KV cache "
        f"({one_sequence / GiB:.2f} GiB) exceed mem_fraction_static of the devices ({sum(statics) / GiB:.2f} GiB)",
    )
