"""The transformers engine plugin: PyTorch checkpoints on CPU or CUDA.

Launch options are in ``xinf_transformers.options``.  Chat and completions go
through ``ContinuousBatchingManager`` (``batching.py``) or, with batching off,
one at a time through ``generate()`` (``serial.py``); embedding models through
``embedding.py``.  torch and transformers are imported in ``load`` only.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from xinf import hookimpl
from xinf.errors import InvalidRequest, LaunchError
from xinf.prompts import encode_prompt
from xinf.stops import StopMatcher
from xinf.types import (
    Chunk,
    Device,
    EmbedRequest,
    EmbedResult,
    EngineMatch,
    GenerateRequest,
    Hardware,
    LoraAdapter,
    MemoryEstimate,
    ModelSpec,
    Placement,
    Usage,
)
from xinf_transformers import estimate as est
from xinf_transformers import options as o
from xinf_transformers.text import Detokenizer, make_job

log = logging.getLogger(__name__)
ENGINE = "transformers"

#: formats served only when their quantization library is installed: (modules, pip package)
QUANTIZED = {
    "gptq": (("gptqmodel", "auto_gptq"), "gptqmodel"),
    "awq": (("awq", "gptqmodel"), "autoawq"),
    "bnb": (("bitsandbytes",), "bitsandbytes"),
    "fp4": (("bitsandbytes",), "bitsandbytes"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    # The default for PyTorch checkpoints on a CPU machine; on CUDA, engines
    # built for GPUs (vLLM, SGLang) should win when they are installed.
    score = 40 if hardware.has_cuda else 60
    if spec.adapters:
        reason = _adapters_reason(spec)
        if reason:
            return EngineMatch(engine=ENGINE, score=0, reason=reason)
    if spec.format == "pytorch":
        return EngineMatch(engine=ENGINE, score=score, reason="PyTorch checkpoint")
    if spec.format in QUANTIZED:
        modules, package = QUANTIZED[spec.format]
        if any(_installed(m) for m in modules):
            return EngineMatch(engine=ENGINE, score=score - 10, reason=f"{spec.format} checkpoint")
        return EngineMatch(
            engine=ENGINE, score=0, reason=f"{spec.format} models need the {package} package: pip install {package}"
        )
    served = ", ".join(["pytorch", *QUANTIZED])
    return EngineMatch(engine=ENGINE, score=0, reason=f"serves {served} checkpoints, not {spec.format!r}")


def _adapters_reason(spec: ModelSpec) -> str | None:
    """Why this engine cannot serve ``spec``'s LoRA adapters, or None."""
    from xinf_transformers.adapters import not_peft

    if spec.model_type == "embedding" or "embed" in spec.abilities:
        return "the transformers engine serves LoRA adapters on chat and generate models, not embedding models"
    if not _installed("peft"):
        return "LoRA adapters on the transformers engine need peft: pip install peft==0.21.2"
    return not_peft(spec.adapters)


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    if spec.adapters:
        from xinf_transformers.adapters import check

        check(spec.adapters, spec.source.path)  # an adapter that does not fit fails the launch before any replica
    return est.estimate(spec, options, devices)


class ChatModel:
    """A loaded causal LM: tokenizer, model and the runner that schedules its requests."""

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer: Any,
        model: Any,
        runner: Any,
        context_length: int,
        batching: bool,
        gate: Any = None,
    ):
        self.spec = spec
        self.gate = gate  # an AdapterGate when the model has LoRA adapters
        self.tokenizer = tokenizer
        self.model = model
        self.runner = runner
        self.context_length = context_length
        self.batching = batching
        self.eos_ids, self.stop_strings = _eos_and_stops(spec, tokenizer, model)
        generation = getattr(model, "generation_config", None)
        self.defaults: dict[str, Any] = {}
        if generation is not None and getattr(generation, "do_sample", False):
            for name in ("temperature", "top_p", "top_k"):
                value = getattr(generation, name, None)
                if value is not None:
                    self.defaults[name] = value


def _eos_and_stops(spec: ModelSpec, tokenizer: Any, model: Any) -> tuple[set[int], list[str]]:
    """End-of-sequence ids: the model's, its tokenizer's and the family's stop strings that are single tokens."""
    eos: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list):
            eos.update(v for v in value if isinstance(v, int))
    strings = []
    vocab = tokenizer.get_vocab()
    for stop in spec.stop:
        if stop in vocab:
            eos.add(vocab[stop])
        else:
            strings.append(stop)
    return eos, strings


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    opts = o.parse(options)
    if not spec.source.path or not Path(spec.source.path).is_dir():
        raise LaunchError(f"{spec.name}: the transformers engine needs a model directory, got {spec.source.path!r}")
    import torch

    from xinf.settings import Settings

    if opts.threads:
        torch.set_num_threads(opts.threads)
    cuda = torch.cuda.is_available() and (opts.device == "cuda" or (opts.device == "auto" and bool(placement.devices)))
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise LaunchError("device cuda was asked for but torch sees no CUDA device", param="device")
    dtype_name = o.choose_dtype(opts.dtype, on_cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    dtype = getattr(torch, dtype_name)
    device = "cuda" if cuda else "cpu"
    settings = Settings.from_env()
    path = spec.source.path
    if spec.model_type == "embedding" or "embed" in spec.abilities:
        return _load_embedding(path, dtype, device, opts, settings)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=opts.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise LaunchError(f"transformers could not load {path}: {exc}") from None
    model = model.to(device).eval()
    gate = None
    if spec.adapters:
        from xinf_transformers.adapters import AdapterGate, Adapters

        gate = AdapterGate(Adapters(model, spec.adapters))  # LoRA layers now wrap the model's own
    config = o.read_config(spec)
    context = o.context_length(spec, opts, config)
    batching = settings.transformers_enable_batching and opts.max_num_seqs > 1
    runner: Any
    if batching:
        from xinf_transformers.batching import BatchRunner

        runner = BatchRunner(
            model,
            max_num_seqs=opts.max_num_seqs,
            cache_tokens=est.kv_tokens(spec, opts, config),
            max_batch_tokens=opts.max_batch_tokens,
            seed=opts.seed,
            share_prefixes=gate is None,
        )
    else:
        from xinf_transformers.serial import SerialRunner

        runner = SerialRunner(model, tokenizer)
    log.info(
        "loaded %s on %s in %s, context %d, %s",
        spec.name,
        device,
        dtype_name,
        context,
        f"continuous batching of up to {opts.max_num_seqs} requests" if batching else "one request at a time",
    )
    return ChatModel(spec, tokenizer, model, runner, context, batching, gate)


def _load_embedding(path: str, dtype: Any, device: str, opts: o.Options, settings: Any) -> Any:
    from transformers import AutoModel, AutoTokenizer

    from xinf_transformers.embedding import EmbeddingModel, Pipeline

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
        model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=opts.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LaunchError(f"transformers could not load {path}: {exc}") from None
    return EmbeddingModel(
        model.to(device).eval(), tokenizer, Pipeline(Path(path)), settings.batch_size, settings.batch_interval
    )


@hookimpl
async def generate(model: Any, request: GenerateRequest) -> AsyncIterator[Chunk]:
    if not isinstance(model, ChatModel):
        raise InvalidRequest("this model only embeds: use /v1/embeddings", param="model")
    prompt_ids = encode_prompt(model.tokenizer, model.spec, request)
    job = make_job(
        prompt_ids, request, context_length=model.context_length, eos_ids=model.eos_ids, defaults=model.defaults
    )
    model.runner.check(job)  # refusals become 400s before the stream starts
    stops = StopMatcher([*request.stop, *model.stop_strings])
    text = Detokenizer(model.tokenizer)
    eos = set(job.eos_ids)
    produced = 0
    finish = "length"
    stream = model.runner.tokens(job)
    if model.gate is not None:
        stream = model.gate.wrap(request.adapter, stream)
    try:
        async for ids in stream:
            produced += len(ids)
            if not job.ignore_eos and ids[-1] in eos:
                finish = "stop"
            delta, stopped = stops.feed(text.add(ids))
            if stopped:
                finish = "stop"
                if delta:
                    yield Chunk(text=delta, token_ids=ids)
                break
            if delta:
                yield Chunk(text=delta, token_ids=ids)
    finally:
        await stream.aclose()
    yield Chunk(
        text=stops.flush(),
        finish_reason=finish,
        usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=produced),
    )


@hookimpl
async def embed(model: Any, request: EmbedRequest) -> EmbedResult:
    from xinf_transformers.embedding import EmbeddingModel

    if not isinstance(model, EmbeddingModel):
        raise InvalidRequest("this model does not embed: use a model with the embed ability", param="model")
    return await model.embed(request)


@hookimpl
def unload(model: Any) -> None:
    closer = getattr(getattr(model, "runner", model), "close", None)
    if closer is not None:
        closer()


@hookimpl
async def update_adapters(model: Any, add: list[LoraAdapter], remove: list[str]) -> None:
    if not isinstance(model, ChatModel) or model.gate is None:
        raise InvalidRequest(
            "this model was launched without LoRA adapters; launch it with peft_model_config to change them later",
            param="model",
        )
    spec = msgspec.structs.replace(model.spec, adapters=add)
    reason = _adapters_reason(spec) if add else None
    if reason:
        raise InvalidRequest(reason, param="local_path")
    gate = model.gate
    await gate.exclusive(lambda: gate.adapters.change(add, remove))
