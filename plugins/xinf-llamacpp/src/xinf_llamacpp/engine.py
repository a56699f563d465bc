"""A loaded GGUF model: an xllamacpp ``Server`` and the threads that feed it.

xllamacpp's ``handle_chat_completions`` / ``handle_completions`` block until
the request ends, release the GIL while llama.cpp works, and call a callback
per chunk when streaming.  Each request runs in its own worker thread; the
chunks cross to the event loop through an ``asyncio.Queue``.  llama.cpp
batches the threads' requests across its ``n_parallel`` slots.

Two xllamacpp behaviours shape this module: an exception raised in the
callback is swallowed, so the callback only queues raw dicts and all parsing
happens on the event loop side; and returning True from the callback is the
only way to stop a request, so closing the stream sets a flag the callback
returns on the next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xinf.errors import ContextLengthExceeded, EngineError, InvalidRequest, XinfError
from xinf.toolcalls import known
from xinf.toolcalls.choice import allowed_tools, forced_name, forced_schema, is_forced
from xinf.types import Chunk, GenerateRequest, ModelSpec, TokenLogprob, Usage
from xinf.vision import as_data_urls, has_images
from xinf_llamacpp.lora import request_scales

log = logging.getLogger(__name__)

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class LlamaCppModel:
    """One replica's model.  ``server`` is an ``xllamacpp.Server``.

    Tool calls: a model whose family declares its format gets the tools
    rendered by its template (as the template variable ``tools``) and its text
    parsed by the core; a forced call is constrained by llama.cpp's JSON-schema
    grammar (``constrains_tool_calls``).  llama.cpp refuses a grammar beside
    its own tools, and its own template analysis finds no tool format in
    templates such as SmolLM2's.  Any other model gets llama.cpp's own tool
    handling (``tools`` and ``tool_choice`` passed on, its parsed calls back).
    """

    #: forced tool calls are constrained to ``xinf.toolcalls.choice.forced_schema`` (see ``body``)
    constrains_tool_calls = True

    def __init__(
        self,
        server: Any,
        spec: ModelSpec,
        *,
        n_ctx: int,
        n_parallel: int,
        per_slot: int,
        gpu_layers: int,
        n_vocab: int = 0,
        http_key: str | None = None,
        threads: int | None = None,
        reads_images: bool = False,
    ):
        self.server = server
        self.reads_images = reads_images
        #: the key of llama.cpp's own HTTP port (``server.listening_address``), for debugging
        self.http_key = http_key
        self.spec = spec
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.per_slot = per_slot
        self.context_length = per_slot  # one request gets one slot's share of n_ctx (reported to the server)
        self.gpu_layers = gpu_layers
        self.n_vocab = n_vocab
        #: CPU threads llama.cpp runs (``cpuparams.n_threads``), reported to the server
        self.threads = threads
        # Requests beyond the slots wait inside llama.cpp, each in its thread.
        self.executor = ThreadPoolExecutor(max_workers=max(32, 8 * n_parallel), thread_name_prefix="llama.cpp")
        self.running: set[threading.Event] = set()

    def close(self) -> None:
        """Stop every request; llama.cpp's server ends when the object is collected."""
        for stop in list(self.running):
            stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.server is not None:
            self._wait_for_loop()
        self.server = None

    def _wait_for_loop(self) -> None:
        """Return once llama.cpp's main loop runs, so that the server can be destroyed.

        xllamacpp's ``Server`` returns before its thread enters llama.cpp's
        main loop, and that loop sets itself running as it starts: a server
        destroyed in between (a replica stopped right after its load) has its
        stop overwritten and waits for the loop forever.  ``/slots`` is
        answered by the loop, so an answer means it runs (a server launched
        with ``endpoint_slots: false`` refuses it at once, proving nothing: it
        gets a short pause instead).
        """
        import time
        import urllib.request

        url = f"{self.server.listening_address}/slots"
        headers = {"Authorization": f"Bearer {self.http_key}"} if self.http_key else {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never a proxy
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=10):
                return
        except (OSError, ValueError):
            time.sleep(0.1)

    # ------------------------------------------------------------ requests

    def messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chat as llama.cpp takes it: images as ``data:`` URLs, which only a model with a projector reads."""
        if not has_images(messages):
            return messages
        if not self.reads_images:
            raise InvalidRequest(
                f"{self.spec.name} was launched without a multimodal projector, so it cannot read images; launch "
                "it with multimodal_projector (its mmproj GGUF file)",
                param="messages",
                code="images_not_supported",
            )
        return as_data_urls(messages)

    def body(self, request: GenerateRequest) -> dict[str, Any]:
        """The OpenAI-shaped request llama.cpp's server takes."""
        body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
        if request.is_chat:
            body["messages"] = self.messages(request.messages or [])
            if request.chat_template_kwargs:
                body["chat_template_kwargs"] = dict(request.chat_template_kwargs)
            if request.tools:
                self.tools_body(request, body)
        else:
            body["prompt"] = request.prompt_ids if request.prompt_ids is not None else (request.prompt or "")
        sampling = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
            "min_p": request.min_p,
            "repeat_penalty": request.repetition_penalty,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "seed": request.seed,
        }
        body.update({k: v for k, v in sampling.items() if v is not None})
        stops = list(request.stop)
        if not request.ignore_eos:
            # The family's end markers: usually end-of-generation tokens llama.cpp
            # stops on anyway, but a registration may list plain strings.
            stops += [s for s in self.spec.stop if s not in stops]
        if stops:
            body["stop"] = stops
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.logit_bias:
            # llama.cpp ignores ids it does not know: name them instead.
            bad = [i for i in request.logit_bias if self.n_vocab and not 0 <= i < self.n_vocab]
            if bad:
                raise InvalidRequest(
                    f"logit_bias token ids {bad[:5]} are not in the vocabulary (0 to {self.n_vocab - 1})",
                    param="logit_bias",
                )
            body["logit_bias"] = {str(i): v for i, v in request.logit_bias.items()}
        if self.spec.adapters:
            body["lora"] = request_scales(self.spec.adapters, request.adapter)
        if request.response_format:
            if "response_format" in body:
                raise InvalidRequest(
                    "response_format cannot be combined with a forced tool call (tool_choice)", param="response_format"
                )
            body["response_format"] = request.response_format
        if request.logprobs is not None:
            # llama.cpp reports the chosen token's logprob only alongside at least one alternative.
            wanted = max(1, request.logprobs)
            if request.is_chat:
                body["logprobs"] = True
                body["top_logprobs"] = wanted
            else:
                body["logprobs"] = wanted
        return body

    def tools_body(self, request: GenerateRequest, body: dict[str, Any]) -> None:
        tools = request.tools or []
        if known(self.spec.tool_parser):
            body.setdefault("chat_template_kwargs", {})["tools"] = tools
            if is_forced(request.tool_choice):
                schema = forced_schema(tools, request.tool_choice)
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "tool_call", "schema": schema},
                }
            return
        # llama.cpp takes tool_choice as a string only: a named function becomes "required" of that one tool.
        body["tools"] = allowed_tools(tools, request.tool_choice)
        if request.tool_choice is not None:
            body["tool_choice"] = "required" if forced_name(request.tool_choice) else request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls

    async def stream(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        if self.server is None:
            raise EngineError("the model is unloaded")
        if request.prompt_logprobs is not None:
            raise InvalidRequest(
                "llama.cpp cannot return the prompt's logprobs (echo with logprobs, or echo of a token-id prompt)",
                param="echo",
            )
        body = self.body(request)
        handler = self.server.handle_chat_completions if request.is_chat else self.server.handle_completions
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        self.running.add(stop)
        future = loop.run_in_executor(self.executor, _run, handler, body, stop, loop, queue)
        reader = _Reader(self, request)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise _map_exception(item.exc)
                for chunk in reader.feed(item):
                    yield chunk
            yield reader.final()
        finally:
            # Closing the stream (client gone, aclose) ends the llama.cpp task at its next token.
            stop.set()
            self.running.discard(stop)
            if not future.done():
                future.add_done_callback(_log_failure)


def _run(
    handler: Callable[..., Any],
    body: dict[str, Any],
    stop: threading.Event,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[Any],
) -> None:
    """One request, in a worker thread.  Never raises into xllamacpp's callback."""

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening
            stop.set()

    def callback(data: Any) -> bool:
        if stop.is_set():
            return True
        put(data)
        return False

    if stop.is_set():  # closed while waiting for a thread
        return
    try:
        handler(body, callback)
    except BaseException as exc:
        put(_Failed(exc))
        return
    put(_DONE)


def _log_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("llama.cpp request thread ended with %s: %s", type(exc).__name__, exc)


class _Reader:
    """Turns llama.cpp's stream dicts into ``Chunk`` s; keeps the finish and usage for the last one."""

    def __init__(self, model: LlamaCppModel, request: GenerateRequest):
        self.model = model
        self.request = request
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.called = False

    def feed(self, data: Any) -> list[Chunk]:
        items = data if isinstance(data, list) else [data]
        out = []
        for item in items:
            if not isinstance(item, dict):
                continue
            if "error" in item:
                raise self.model_error(item["error"])
            usage = item.get("usage")
            if usage:
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                self.usage = Usage(
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    cached_tokens=int(cached) if isinstance(cached, int) else None,
                )
            for choice in item.get("choices") or []:
                chunk = self.choice(choice)
                if chunk is not None:
                    out.append(chunk)
        return out

    def choice(self, choice: dict[str, Any]) -> Chunk | None:
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        delta = choice.get("delta")
        if delta is not None:
            text = delta.get("content") or ""
            reasoning = delta.get("reasoning_content") or ""
            calls = delta.get("tool_calls") or None  # OpenAI deltas already
        else:
            text, reasoning, calls = choice.get("text") or "", "", None
        logprobs = self.logprobs(choice.get("logprobs"))
        if not text and not reasoning and not logprobs and not calls:
            return None
        self.called = self.called or bool(calls)
        return Chunk(text=text, reasoning=reasoning, logprobs=logprobs, tool_calls=calls)

    def logprobs(self, data: Any) -> list[TokenLogprob] | None:
        if self.request.logprobs is None or not isinstance(data, dict):
            return None
        wanted = self.request.logprobs
        items = []
        for entry in data.get("content") or []:
            top = [(t["token"], float(t["logprob"])) for t in entry.get("top_logprobs") or []][:wanted]
            items.append(TokenLogprob(token=entry["token"], logprob=float(entry["logprob"]), top_logprobs=top))
        return items or None

    def final(self) -> Chunk:
        finish = self.finish or "stop"
        if self.called and finish == "stop":
            finish = "tool_calls"
        return Chunk(finish_reason=finish, usage=self.usage or Usage())

    def model_error(self, error: Any) -> XinfError:
        if not isinstance(error, dict):
            return EngineError(f"llama.cpp: {error}")
        message = str(error.get("message") or error)
        kind = error.get("type")
        code = error.get("code")
        if kind == "exceed_context_size_error" or "context size" in message or "too big compared to KV" in message:
            model = self.model
            n_prompt = error.get("n_prompt_tokens")
            n_ctx = error.get("n_ctx") or model.per_slot
            said = f"the prompt has {n_prompt} tokens, more than" if n_prompt else "the prompt does not fit"
            return ContextLengthExceeded(
                f"{said} the context size of {n_ctx} tokens per request "
                f"(n_ctx {model.n_ctx} shared by n_parallel {model.n_parallel} slots); "
                "shorten the prompt, or relaunch the model with a larger n_ctx or a smaller n_parallel",
                param="messages" if self.request.is_chat else "prompt",
            )
        if code == 501 or kind == "not_supported_error":
            return InvalidRequest(f"llama.cpp: {message}", code="unsupported_parameter")
        if (isinstance(code, int) and 400 <= code < 500) or kind == "invalid_request_error":
            return InvalidRequest(f"llama.cpp: {message}")
        return EngineError(f"llama.cpp: {message}")


def _map_exception(exc: BaseException) -> BaseException:
    # xllamacpp raises ValueError for requests it cannot parse (bad messages, response_format...).
    if isinstance(exc, ValueError):
        return InvalidRequest(f"llama.cpp: {exc}", param=_param_of(str(exc)))
    if isinstance(exc, XinfError):
        return exc
    return EngineError(f"llama.cpp: {type(exc).__name__}: {exc}")


def _param_of(message: str) -> str | None:
    """The request field a llama.cpp parse error is about, so the 400 names it."""
    text = message.lower()
    for words, param in (
        (("tool_call",), "messages"),
        (("tool",), "tools"),
        (("response_format", "json_schema", "schema", "grammar"), "response_format"),
        (("message", "content", "role", "template"), "messages"),
    ):
        if any(w in text for w in words):
            return param
    return None
