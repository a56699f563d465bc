"""The transformers engine plugin: PyTorch checkpoints on CPU or CUDA.

Launch options are in ``xinf_transformers.options``.  Chat and completions go
through ``ContinuousBatchingManager`` (``batching.py``) or, with batching off,
one at a time through ``generate()`` (``serial.py``); embedding models through
``embedding.py``.  torch and transformers are imported in ``load`` only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from xinf import cores, hookimpl
from xinf.errors import InvalidRequest, LaunchError
from xinf.operations import RerankRequest, RerankResult
from xinf.prompts import encode_prompt
from xinf.stops import StopMatcher
from xinf.toolcalls import known
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
#: What a warm-pool worker imports before its launch (xinf.warmpool): torch and the parts of transformers every
#: load uses; importing them touches no device (torch initialises CUDA on first use, after placement).
WARM_IMPORTS = [
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.tokenization_utils_tokenizers",
    "transformers.generation.continuous_batching",
    "xinf_transformers.batching",
]
ENGINE = "transformers"
SERVED_TYPES = ("LLM", "embedding", "rerank")

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
    if spec.model_type not in SERVED_TYPES:
        return EngineMatch(
            engine=ENGINE, score=0, reason=f"serves {', '.join(SERVED_TYPES)} models, not {spec.model_type} models"
        )
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
        self.threads: int | None = None  # torch's intra-op threads
        self.eos_ids, self.stop_strings = _eos_and_stops(spec, tokenizer, model)
        from xinf_transformers import constrain

        # With llguidance, JSON responses and forced tool calls are constrained (one request at a time).
        self.constrains_tool_calls = constrain.available()
        self.grammars = constrain.Grammars(
            tokenizer, int(model.config.get_text_config().vocab_size), sorted(self.eos_ids)
        )
        self._serial: Any = None
        self.processor: Any = None  # an image-text-to-text model's AutoProcessor (xinf_transformers.vision)
        generation = getattr(model, "generation_config", None)
        self.defaults: dict[str, Any] = {}
        if generation is not None and getattr(generation, "do_sample", False):
            for name in ("temperature", "top_p", "top_k"):
                value = getattr(generation, name, None)
                if value is not None:
                    self.defaults[name] = value

    def constrained_runner(self) -> Any:
        """Constrained requests run through ``generate()`` with a logits processor, beside any batch."""
        if self._serial is None:
            from xinf_transformers.serial import SerialRunner

            self._serial = self.runner if not self.batching else SerialRunner(self.model, self.tokenizer)
        return self._serial


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

    # The option wins; else the replica's placed cores (OMP_NUM_THREADS already says so to OpenMP).
    threads = opts.threads or cores.threads(placement)
    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available() and (opts.device == "cuda" or (opts.device == "auto" and bool(placement.devices)))
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise LaunchError("device cuda was asked for but torch sees no CUDA device", param="device")
    dtype_name = o.choose_dtype(opts.dtype, on_cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported())
    if spec.model_type == "rerank" and opts.dtype == "auto" and not cuda:
        dtype_name = "float32"  # scores as the reference (CrossEncoder) computes them; rerankers are small
    dtype = getattr(torch, dtype_name)
    device = "cuda" if cuda else "cpu"
    settings = Settings.from_env()
    path = spec.source.path
    if spec.model_type == "embedding" or "embed" in spec.abilities:
        embedder = _load_embedding(path, dtype, device, opts, settings)
        embedder.threads = torch.get_num_threads()  # reported to the server
        return embedder
    if spec.model_type == "rerank" or "rerank" in spec.abilities:
        reranker = _load_rerank(path, dtype, device, opts, settings)
        reranker.threads = torch.get_num_threads()  # reported to the server
        return reranker

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xinf_transformers import vision

    processor = None
    if vision.is_vision(spec, path):  # image-text-to-text: served one request at a time
        processor, model = vision.load(path, dtype, opts.trust_remote_code)
        tokenizer = processor.tokenizer
    else:
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
    batching = settings.transformers_enable_batching and opts.max_num_seqs > 1 and processor is None
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
    chat = ChatModel(spec, tokenizer, model, runner, context, batching, gate)
    chat.processor = processor
    chat.threads = torch.get_num_threads()  # reported to the server
    return chat


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


def _load_rerank(path: str, dtype: Any, device: str, opts: o.Options, settings: Any) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xinf_transformers import llmrerank
    from xinf_transformers.rerank import RerankModel

    try:
        config = json.loads((Path(path) / "config.json").read_text())
        architectures = config.get("architectures") or []
    except (OSError, ValueError, AttributeError):
        config, architectures = {}, []
    if llmrerank.is_llm_reranker(architectures):  # Qwen3-Reranker: a causal LM answering yes or no
        loaded = llmrerank.load(path, str(config.get("model_type", "")), dtype, device, opts, settings)
        log.info("loaded LLM-style reranker %s on %s: at most %d tokens a pair", path, device, loaded.max_length)
        return loaded
    if architectures and not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise LaunchError(f"{path} is a {architectures[0]}: neither a cross-encoder nor an LLM-style reranker")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, trust_remote_code=opts.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise LaunchError(f"transformers could not load {path} as a cross-encoder: {exc}") from None
    loaded = RerankModel(model.to(device).eval(), tokenizer, settings.batch_size)
    log.info("loaded reranker %s on %s: at most %d tokens a pair", path, device, loaded.max_length)
    return loaded


@hookimpl
async def generate(model: Any, request: GenerateRequest) -> AsyncIterator[Chunk]:
    if not isinstance(model, ChatModel):
        raise InvalidRequest("this model only embeds: use /v1/embeddings", param="model")
    inputs: dict[str, Any] = {}
    if model.processor is not None:
        from xinf_transformers.vision import prepare

        prompt_ids, inputs = await asyncio.to_thread(prepare, model.processor, model.spec, request, model.model)
    else:
        prompt_ids = encode_prompt(model.tokenizer, model.spec, request)
    job = make_job(
        prompt_ids,
        request,
        context_length=model.context_length,
        eos_ids=model.eos_ids,
        defaults=model.defaults,
        constrained=model.constrains_tool_calls,
    )
    job.inputs = inputs or None
    runner = model.runner if job.schema is None else model.constrained_runner()
    runner.check(job)  # refusals become 400s before the stream starts
    processors = [await asyncio.to_thread(model.grammars.processor, job.schema)] if job.schema is not None else []
    if request.prompt_logprobs is not None:  # echo: the prompt's tokens with their log probabilities
        from xinf_transformers.text import prompt_logprobs

        yield Chunk(
            prompt_logprobs=await asyncio.to_thread(prompt_logprobs, model, prompt_ids, request.prompt_logprobs)
        )
    stops = StopMatcher([*request.stop, *model.stop_strings])
    eos = set(job.eos_ids)
    parsing_tools = bool(request.tools and known(model.spec.tool_parser) and request.tool_choice != "none")
    text = Detokenizer(model.tokenizer, keep_special=parsing_tools, drop=eos if parsing_tools else ())
    produced = 0
    finish = "length"
    stream = runner.tokens(job, processors) if processors else runner.tokens(job)
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
def convert_ids_to_tokens(model: Any, ids: list[list[int]]) -> list[list[str]]:
    tokenizer = model.tokenizer  # chat, embedding and rerank models all keep theirs
    size = len(tokenizer)
    bad = [i for row in ids for i in row if not 0 <= i < size]
    if bad:
        raise InvalidRequest(f"token ids {bad[:5]} are outside the vocabulary (0-{size - 1})", param="input")
    return [list(tokenizer.convert_ids_to_tokens(row)) for row in ids]


@hookimpl
async def rerank(model: Any, request: RerankRequest) -> RerankResult:
    from xinf_transformers.rerank import RerankModel

    if not isinstance(model, RerankModel):
        raise InvalidRequest("this model is not a reranker: use a model with the rerank ability", param="model")
    return await model.rerank(request)


@hookimpl
def unload(model: Any) -> None:
    closer = getattr(getattr(model, "runner", model), "close", None)
    if closer is not None:
        closer()


@hookimpl
async def update_adapters(model: Any, add: list[LoraAdapter], remove: list[str]) -> None:
    from xinf.adapters import as_adapters

    add = as_adapters(add)
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
