"""The llama.cpp engine plugin for xinf: GGUF models through xllamacpp.

xllamacpp (and numpy, through ``gguf``) are imported inside the hooks, never
at module import: the server and the CLI import every plugin to list engines.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

from xinf import cores, hookimpl, projectors
from xinf.errors import InvalidRequest, LaunchError
from xinf.types import (
    Chunk,
    Device,
    EngineMatch,
    GenerateRequest,
    Hardware,
    MemoryEstimate,
    ModelSpec,
    Placement,
)
from xinf_llamacpp import lora
from xinf_llamacpp import options as opts

ENGINE = "llama.cpp"
log = logging.getLogger("xinf_llamacpp")
#: What a warm-pool worker imports before its launch (xinf.warmpool).  A GPU build that loads its driver at import
#: is seen by the worker, which then serves CPU replicas only.
WARM_IMPORTS = ["xllamacpp", "xinf_llamacpp.engine", "xinf_llamacpp.estimate"]  # estimate: load() reads the shape
#: Replicas start with glibc asking for transparent huge pages for its large allocations (THP "madvise", the usual
#: kernel setting): llama.cpp allocates its KV cache and buffers once and clears them at load, where 4 KiB pages
#: fault 512 times per 2 MiB. A 99M-parameter F16 GGUF with a 16,384-token cache, loaded by llama.cpp alone in a
#: fresh interpreter until its first token: 0.37 s with it, 0.46 s without (medians of 6 and 5 runs here). Older
#: glibc ignores the variable.
REPLICA_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.format != "ggufv2":
        return EngineMatch(engine=ENGINE, score=0, reason=f"llama.cpp serves GGUF models (ggufv2), not {spec.format}")
    if "chat" not in spec.abilities and "generate" not in spec.abilities:
        return EngineMatch(
            engine=ENGINE,
            score=0,
            reason=f"llama.cpp here serves chat and generate models; {spec.name} has {', '.join(spec.abilities)}",
        )
    if importlib.util.find_spec("xllamacpp") is None:
        return EngineMatch(engine=ENGINE, score=0, reason="xllamacpp is not installed: pip install xllamacpp")
    if spec.adapters:
        from xinf_llamacpp.lora import not_gguf

        reason = not_gguf(spec.adapters)
        if reason:
            return EngineMatch(engine=ENGINE, score=0, reason=reason)
    return EngineMatch(engine=ENGINE, score=60, reason="GGUF model")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    from xinf_llamacpp import estimate

    flat = opts.flat(options)
    _check_options(flat)
    path = spec.source.path
    if not path or not os.path.isfile(path):
        return None
    adapter_bytes = lora.check_all(spec.adapters, path)  # an adapter that does not fit fails the launch now
    try:
        shape = _shape(path)
        settings = estimate.EstimateOptions.from_options(
            flat, opts.context(flat, shape.n_ctx_train), projector=_projector_bytes(flat, spec)
        )
        settings.adapters = estimate.adapter_layers(adapter_bytes, shape.n_layer)
        free = [d.free_memory for d in devices]
        plan = estimate.plan(shape, settings, free)
    except LaunchError:
        raise  # a bad option: the launch fails now, with the option named
    except Exception as exc:
        # Placement goes by device count; load() then leaves n_gpu_layers to
        # llama.cpp ("all", lowered by its own fit_params if they do not fit).
        log.warning("memory estimate for %s failed, offloading all layers: %s: %s", path, type(exc).__name__, exc)
        return None
    return MemoryEstimate(
        weights=plan.weights,
        kv_cache=plan.kv_cache,
        overhead=plan.overhead,
        per_device=plan.per_device,
        host=plan.host,
        gpu_layers=plan.gpu_layers,
        total_layers=plan.total_layers,
        note=estimate.describe(plan, shape, settings, free),
    )


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    import xllamacpp as xlc

    from xinf_llamacpp.engine import LlamaCppModel

    path = spec.source.path
    if not path or not os.path.isfile(path):
        raise LaunchError(f"llama.cpp needs a GGUF file; {path or 'no path'} is not one")
    flat = opts.flat(options)
    lora.check_all(spec.adapters, path)
    n_vocab = 0
    try:
        shape = _shape(path)
        n_ctx_train, n_vocab = shape.n_ctx_train, shape.n_vocab
    except Exception:
        n_ctx_train = spec.context_length  # llama.cpp will say what is wrong with the file
    ctx = opts.context(flat, n_ctx_train)

    params = xlc.CommonParams()
    params.model.path = path
    projector = projectors.local_file(spec)  # the launch's multimodal_projector (mmproj): the model reads images
    if projector:
        if not os.path.isfile(projector):
            raise LaunchError(f"the multimodal projector {projector} is not a file", param="multimodal_projector")
        params.mmproj.path = projector
        params.mmproj_use_gpu = placement.gpu_layers != 0 and bool(placement.devices)
    params.n_ctx = ctx.n_ctx
    params.n_parallel = ctx.n_parallel
    # The replica's placed cores (it is pinned to them); the old guess from idle cores where none are placed.
    threads = opts.placed_threads(cores.threads(placement)) or opts.default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # The core splits <think> tags itself; llama.cpp must hand over the raw text.
    params.reasoning_format = xlc.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
    if spec.chat_template:
        params.chat_template = spec.chat_template
    elif spec.fallback_chat_template and not _has_template(path):
        params.chat_template = spec.fallback_chat_template  # the catalogue's, for a file without its own
    # xllamacpp's Server also answers HTTP on a local port of its own.  xinf
    # never uses it, and without a key anyone on the machine could use it
    # around xinf's API keys: a random key nobody knows closes it.
    http_key = secrets.token_urlsafe(32)
    params.api_keys = [http_key]
    if placement.gpu_layers is not None:
        params.n_gpu_layers = placement.gpu_layers
    if not placement.devices:
        # llama.cpp's warm-up decodes two tokens and then clears the whole KV cache a second time (a memset of
        # n_ctx's cache: 192 MiB at n_ctx 16384 for a 100M model).  On a CPU its only lasting effect, the model's
        # pages read in, is what the first request does anyway (measured: no slower without it), so the launch
        # would pay for nothing; a GPU replica keeps it (it initialises the device's kernels there).
        params.warmup = False
    if spec.adapters:
        # Loaded with the model, applied per request (the engine sends every adapter's scale each time).
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(a.path, 0.0) for a in spec.adapters]
        params.lora_init_without_apply = True
    opts.apply(params, flat)  # the user's options win, n_gpu_layers included

    log.info(
        "llama.cpp: %s, n_ctx %d (%d per slot x %d slots), %d threads, n_gpu_layers %s",
        path,
        ctx.n_ctx,
        ctx.per_slot,
        ctx.n_parallel,
        params.cpuparams.n_threads,
        params.n_gpu_layers if params.n_gpu_layers >= 0 else "auto (llama.cpp fits them)",
    )
    try:
        server = xlc.Server(params)
    except (RuntimeError, ValueError) as exc:
        raise LaunchError(
            f"llama.cpp could not load {path}: {exc} (llama.cpp's reason is in the replica log)"
        ) from None
    return LlamaCppModel(
        server,
        spec,
        n_ctx=ctx.n_ctx,
        n_parallel=ctx.n_parallel,
        per_slot=ctx.per_slot,
        gpu_layers=params.n_gpu_layers,
        n_vocab=n_vocab,
        http_key=params.api_keys[0] if params.api_keys else None,
        threads=params.cpuparams.n_threads,
        reads_images=bool(params.mmproj.path),
    )


@hookimpl
def generate(model: Any, request: GenerateRequest) -> AsyncIterator[Chunk]:
    return model.stream(request)  # type: ignore[no-any-return]


@hookimpl
def convert_ids_to_tokens(model: Any, ids: list[list[int]]) -> list[list[str]]:
    # xllamacpp has no detokenize call: the vocabulary is read from the GGUF header once, on first use.
    tokens = getattr(model, "vocabulary", None)
    if tokens is None:
        from xinf.gguf import read_tokens

        tokens = model.vocabulary = read_tokens(model.spec.source.path)
    bad = [i for row in ids for i in row if not 0 <= i < len(tokens)]
    if bad:
        raise InvalidRequest(f"token ids {bad[:5]} are outside the vocabulary (0-{len(tokens) - 1})", param="input")
    return [[tokens[i] for i in row] for row in ids]


@hookimpl
def unload(model: Any) -> None:
    model.close()


def _check_options(flat: dict[str, Any]) -> None:
    """Fail a launch (or ``xinf estimate``) on a bad option before any process starts.

    Setting the options on a bare ``CommonParams`` checks every name, type and
    enum value and loads nothing: xllamacpp initialises llama.cpp's backends
    only when a ``Server`` is created, so importing it here is cheap (65 ms).
    """
    try:
        import xllamacpp as xlc
    except ImportError:
        return  # load() in the replica reports it
    opts.apply(xlc.CommonParams(), flat)


def _has_template(path: str) -> bool:
    from xinf.gguf import read_header

    try:
        return bool(read_header(path).get("tokenizer.chat_template"))
    except Exception:
        return True  # unreadable: llama.cpp decides with what it finds


def _shape(path: str) -> Any:
    from xinf.gguf import read_header
    from xinf_llamacpp.estimate import ModelShape

    return ModelShape.from_header(read_header(path))


def _projector_bytes(options: dict[str, Any], spec: ModelSpec) -> int:
    """Weights of the multimodal projector: the option ``mmproj.path``, else the launch's (``multimodal_projector``)."""
    from xinf.gguf import read_header

    path = options.get("mmproj.path") or projectors.local_file(spec)
    if not path:
        return 0
    if not os.path.isfile(path):
        raise LaunchError(f"the multimodal projector {path} is not a file", param="multimodal_projector")
    return sum(t.nbytes for t in read_header(path).tensors)
