"""Launch options of the transformers engine, and the dtype it picks.

``xinf launch ... --max_num_seqs 8 --dtype float32`` arrives in ``load`` as
``{"max_num_seqs": 8, "dtype": "float32"}``.  Nothing here imports torch: the
estimator runs in the server, which must stay light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from xinf.errors import LaunchError
from xinf.types import ModelSpec

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
#: the context a launch serves when neither the user nor the model says otherwise
DEFAULT_CONTEXT = 4096


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a launch may set; unknown keys fail the launch with their names."""

    #: requests sharing one running batch; 1 turns continuous batching off
    max_num_seqs: int = 16
    #: "auto" (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32), float32, bfloat16, float16
    dtype: str = "auto"
    #: tokens one request may span (prompt + output); default: the model's, at most DEFAULT_CONTEXT
    context_length: int | None = None
    #: tokens the paged KV cache holds for all requests together; default max_num_seqs x context_length
    kv_cache_tokens: int | None = None
    #: prompt tokens one batching step may prefill (bounds how long a new prompt stalls the others)
    max_batch_tokens: int = 512
    #: torch intra-op threads (CPU); None leaves torch's default
    threads: int | None = None
    #: seed of the shared sampler of the running batch (per-request seeds apply without batching)
    seed: int | None = None
    #: "cpu", "cuda" or "auto" (cuda when the replica was given a GPU)
    device: str = "auto"
    #: trust_remote_code for models that ship their own modelling code
    trust_remote_code: bool = False
    #: the instruction an LLM-style reranker (Qwen3-Reranker) judges pairs by; default its model card's
    rerank_instruction: str | None = None


def parse(options: dict[str, Any]) -> Options:
    try:
        opts = msgspec.convert(options, Options, strict=False)
    except msgspec.ValidationError as exc:
        raise LaunchError(f"invalid transformers engine option: {exc}") from None
    opts.dtype = _ALIASES.get(opts.dtype.lower(), opts.dtype.lower())
    if opts.dtype not in (*DTYPES, "auto"):
        raise LaunchError(f"dtype {opts.dtype!r} is not one of auto, {', '.join(DTYPES)}", param="dtype")
    if opts.max_num_seqs < 1:
        raise LaunchError("max_num_seqs must be at least 1", param="max_num_seqs")
    if opts.device not in ("auto", "cpu", "cuda"):
        raise LaunchError(f"device {opts.device!r} is not one of auto, cpu, cuda", param="device")
    for name in ("context_length", "kv_cache_tokens", "max_batch_tokens", "threads"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise LaunchError(f"{name} must be at least 1", param=name)
    return opts


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): then bf16 is faster than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def choose_dtype(requested: str, on_cuda: bool, cuda_bf16: bool = True) -> str:
    if requested != "auto":
        return requested
    if on_cuda:
        return "bfloat16" if cuda_bf16 else "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def read_config(spec: ModelSpec) -> dict[str, Any]:
    """The model's config.json as a dict ({} when there is none)."""
    if not spec.source.path:
        return {}
    path = Path(spec.source.path) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Multimodal configs keep the language model's shape under text_config.
    text = data.get("text_config")
    return {**data, **text} if isinstance(text, dict) else data


def context_length(spec: ModelSpec, opts: Options, config: dict[str, Any]) -> int:
    if opts.context_length:
        return opts.context_length
    known = [v for v in (spec.context_length, config.get("max_position_embeddings")) if isinstance(v, int) and v > 0]
    return min([*known, DEFAULT_CONTEXT])
