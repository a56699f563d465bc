"""Translations to SGLang's terms: launch options -> ``ServerArgs``, requests -> sampling params.

Pure Python, so matching and estimating never import SGLang; ``load`` checks the
result against the real ``ServerArgs`` and SGLang checks the sampling params.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from typing import Any

from xinf.errors import InvalidRequest, LaunchError
from xinf.types import GenerateRequest, ModelSpec, Placement

#: names other engines (and Xinference's vLLM options) use for the same ServerArgs fields
ALIASES = {
    "max_num_seqs": "max_running_requests",
    "gpu_memory_utilization": "mem_fraction_static",
    "max_model_len": "context_length",
    "tensor_parallel_size": "tp_size",
    "seed": "random_seed",
}
#: set from the launch itself, not by options
RESERVED = ("model_path",)


def server_kwargs(
    spec: ModelSpec, options: dict[str, Any], placement: Placement, fields: Collection[str] | None
) -> dict[str, Any]:
    """``ServerArgs`` keyword arguments for a launch; ``fields`` are ServerArgs' field names (None: unchecked).

    Every ``ServerArgs`` field can be given as an option under its own name
    (``--mem_fraction_static 0.8``, ``--chunked_prefill_size 4096``).  Defaults:
    the model's local path, one tensor-parallel rank per placed GPU, SGLang's
    logs at ``error`` and incremental streaming (the engine reads deltas).
    """
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in options.items():
        name = ALIASES.get(key, key)
        if name in RESERVED:
            raise LaunchError(f"{key} is set by the launch (model_path), not as an SGLang option", param=key)
        if fields is not None and name not in fields:
            unknown.append(key)
        kwargs[name] = value
    if unknown:
        valid = sorted(set(fields or ()) | set(ALIASES))
        hints = [
            f"{k!r} (did you mean {', '.join(difflib.get_close_matches(k, valid, n=3)) or 'nothing close'}?)"
            for k in unknown
        ]
        raise LaunchError(f"unknown SGLang option {', '.join(hints)}: options are ServerArgs fields")
    if not spec.source.path:
        raise LaunchError("SGLang needs the model's files on local disk: no path was resolved", param="model_path")
    kwargs["model_path"] = spec.source.path
    kwargs.setdefault("tp_size", max(1, len(placement.devices)))
    kwargs.setdefault("log_level", "error")
    kwargs.setdefault("incremental_streaming_output", True)
    return kwargs


def sampling_params(request: GenerateRequest, max_new_tokens: int) -> dict[str, Any]:
    """SGLang's sampling parameters (``SamplingParams`` fields) for ``request``.

    Fields the request leaves unset are left to SGLang (and the model's
    generation_config).  ``seed`` becomes ``sampling_seed``, which SGLang honours
    only when launched with ``enable_deterministic_inference``.
    """
    params: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "ignore_eos": request.ignore_eos,
        "skip_special_tokens": True,
    }
    if request.stop:
        params["stop"] = list(request.stop)
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    if request.top_k is not None:
        params["top_k"] = -1 if request.top_k <= 0 else request.top_k  # 0 means "no limit" to OpenAI-style clients
    if request.seed is not None:
        params["sampling_seed"] = request.seed
    fmt = request.response_format or {}
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        params["json_schema"] = json.dumps(schema)
    elif kind == "json_object":
        params["json_schema"] = json.dumps({"type": "object"})
    elif kind not in (None, "text"):
        raise InvalidRequest(f"unsupported response_format type {kind!r}", param="response_format")
    return params
