"""The test engine: deterministic output, scripted replays and injected faults.

It serves the ``xinf-test-*`` built-in models (format ``test``) and runs the
same code paths as real engines, so the server, the CLI and third-party
plugins can be tested without any model weights.

Launch options (``xinf launch ... --option value`` or extra launch JSON keys):

- ``script``: text to replay instead of generated words; ``chunks``: chunk
  sizes in characters, cycled (``[3, 1, 5]``), default one word per chunk.
- ``script_env``: replay the value of this environment variable of the
  replica process (shows what ``--env`` and device placement set).
- ``token_delay``: seconds to wait before each chunk.
- ``fail_after``: raise an engine error after that many chunks.
- ``crash_after``: kill the replica process after that many chunks.
- ``hang_after``: block the replica's event loop for good after that many chunks
  (a hung engine: the process lives, pings go unanswered).
- ``hang_on_start``: block the event loop for that many seconds once loaded.
- ``stall_after``: stop producing output after that many chunks while the replica
  keeps answering pings (a stuck engine the health check cannot see).
- ``script_preloaded``: replay ``NAME True`` or ``NAME False``: whether module NAME
  was imported before ``load`` (a warm worker imports ``WARM_IMPORTS`` ahead).
- ``script_path``: replay the model's local path (where its files were downloaded).
- ``script_import``: replay ``NAME VERSION FILE`` of this module as imported by
  the replica (shows which environment the replica runs in).
- ``load_delay``: seconds to sleep in ``load``; ``fail_load``: message to fail with.
- ``events``: a file the engine appends ``start`` and then ``finished`` or
  ``closed`` (aborted by the server) to, one line per request: shows that a
  client's disconnect reached the engine, wherever the replica runs.
- ``vram``: bytes ``estimate_vram`` reports as weights (default 1 GiB).
- ``host_memory``: bytes it reports as host memory on the CPU (default 64 MiB:
  the test engine holds no weights, and its replicas must fit small machines).
- ``context_length``: prompt words allowed (default 2048).
- ``describe_images``: answer with what each image part of the request holds
  (``image/png 68 bytes sha256:<16 hex>``, ``; `` between them): shows what
  reached the engine.  Each image counts as one prompt word.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from xinf import cores, hookimpl
from xinf.errors import ContextLengthExceeded, EngineError, InvalidRequest, LaunchError
from xinf.stops import StopMatcher
from xinf.types import (
    Chunk,
    Device,
    EmbedRequest,
    EmbedResult,
    EngineMatch,
    GenerateRequest,
    Hardware,
    MemoryEstimate,
    ModelSpec,
    Placement,
    TokenLogprob,
    Usage,
)
from xinf.vision import Image, images_of, is_image

ENGINE = "test"
#: Imported by a warm-pool worker before its launch (``xinf.warmpool``): a stdlib module nothing else in a replica
#: imports, so ``script_preloaded`` shows whether the worker that loaded a model was a pre-started one.
WARM_IMPORTS = ["colorsys"]
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey"
).split()
GiB = 1 << 30


class TestOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    script: str | None = None
    script_env: str | None = None
    chunks: list[int] = msgspec.field(default_factory=list)
    token_delay: float = 0.0
    fail_after: int | None = None
    crash_after: int | None = None
    hang_after: int | None = None
    hang_on_start: float = 0.0
    stall_after: int | None = None
    script_import: str | None = None
    script_preloaded: str | None = None
    script_path: bool = False
    load_delay: float = 0.0
    fail_load: str | None = None
    events: str | None = None
    vram: int = GiB
    host_memory: int = 64 << 20
    context_length: int = 2048
    max_tokens_default: int = 16
    describe_images: bool = False


class TestModel:
    def __init__(self, spec: ModelSpec, options: TestOptions, placement: Placement):
        self.spec = spec
        self.options = options
        self.placement = placement
        self.env = dict(os.environ)
        self.threads = cores.threads(placement)  # reported as real engines size their pools


def parse_options(options: dict[str, Any]) -> TestOptions:
    try:
        return msgspec.convert(options, TestOptions, strict=False)
    except msgspec.ValidationError as exc:
        raise LaunchError(f"invalid test engine option: {exc}") from None


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    if spec.format != "test":
        return EngineMatch(engine=ENGINE, score=0, reason="serves only format 'test'")
    if spec.adapters:
        return EngineMatch(engine=ENGINE, score=0, reason="the test engine serves no LoRA adapters")
    return EngineMatch(engine=ENGINE, score=10, reason="test model")


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate:
    opts = parse_options(options)
    kv = 64 << 20
    overhead = 32 << 20
    need = opts.vram + kv + overhead
    return MemoryEstimate(
        weights=opts.vram,
        kv_cache=kv,
        overhead=overhead,
        per_device=[need // len(devices)] * len(devices) if devices else [],
        host=0 if devices else opts.host_memory,
    )


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> TestModel:
    opts = parse_options(options)
    if opts.script_env is not None:
        opts.script = f"{opts.script_env}={os.environ.get(opts.script_env, '<unset>')}"
    if opts.script_path:
        opts.script = spec.source.path or "<none>"
    if opts.script_preloaded is not None:
        import sys

        opts.script = f"{opts.script_preloaded} {opts.script_preloaded in sys.modules}"
    if opts.script_import is not None:
        import importlib
        import importlib.metadata

        module = importlib.import_module(opts.script_import)
        try:
            version = importlib.metadata.version(opts.script_import)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        opts.script = f"{opts.script_import} {version} {module.__file__}"
    if opts.hang_on_start:
        import time

        # Runs once load() has returned and the replica said hello: the loop then stops answering.
        asyncio.get_running_loop().call_soon(time.sleep, opts.hang_on_start)
    if opts.load_delay:
        import time

        time.sleep(opts.load_delay)
    if opts.fail_load:
        raise LaunchError(opts.fail_load)
    return TestModel(spec, opts, placement)


@hookimpl
async def generate(model: TestModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    events = model.options.events
    if events is None:
        async for chunk in _generate(model, request):
            yield chunk
        return
    _event(events, "start")
    outcome = "closed"
    try:
        async for chunk in _generate(model, request):
            yield chunk
        outcome = "finished"
    finally:
        _event(events, outcome)


def _event(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


async def _generate(model: TestModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    opts = model.options
    prompt = _prompt_text(request)
    prompt_tokens = len(prompt.split())
    if prompt_tokens > opts.context_length:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_tokens} tokens, more than the context size of {opts.context_length}"
        )
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        raise InvalidRequest("the test engine supports only text responses", param="response_format")
    request.check_no_logit_bias("test")
    if request.prompt_logprobs is not None:
        # Each prompt word is a token of logprob -1 (the first has none), alternatives the same word.
        words = [(" " if i else "") + w for i, w in enumerate(prompt.split())]
        top = request.prompt_logprobs
        yield Chunk(
            prompt_logprobs=[
                TokenLogprob(
                    token=w, logprob=None if i == 0 else -1.0, top_logprobs=[] if i == 0 else [(w, -1.0)] * top
                )
                for i, w in enumerate(words)
            ]
        )
    max_tokens = request.max_tokens or opts.max_tokens_default
    stops = StopMatcher(request.stop)
    pieces = _pieces(opts, prompt, request.seed)
    if opts.describe_images:
        pieces = ["; ".join(_describe(image) for image in images_of(request.messages))]
    produced = 0
    finish = "length"
    for n, piece in enumerate(pieces):
        if n >= max_tokens:
            break
        if opts.token_delay:
            await asyncio.sleep(opts.token_delay)
        if (opts.crash_after is not None and n >= opts.crash_after) or (
            opts.hang_after is not None and n >= opts.hang_after
        ):
            # One turn of the event loop first: the replica sends what is ready once per turn, and a real engine
            # that crashes or hangs has had its earlier tokens sent by then.
            await asyncio.sleep(0)
        if opts.crash_after is not None and n >= opts.crash_after:
            os._exit(17)
        if opts.hang_after is not None and n >= opts.hang_after:
            import time

            time.sleep(3600)  # noqa: ASYNC251 -- blocks the whole replica, as a stuck engine call would
        if opts.stall_after is not None and n >= opts.stall_after:
            await asyncio.sleep(3600)  # the event loop stays free: pings are answered, no token comes
        if opts.fail_after is not None and n >= opts.fail_after:
            raise EngineError(f"injected failure after {n} chunks")
        produced += 1
        text, stopped = stops.feed(piece)
        logprobs = None
        if request.logprobs is not None:
            logprobs = [TokenLogprob(token=piece, logprob=-0.5, top_logprobs=[(piece, -0.5)] * request.logprobs)]
        if stopped:
            if text:
                yield Chunk(text=text, logprobs=logprobs)
            finish = "stop"
            break
        if text or logprobs:
            yield Chunk(text=text, token_ids=[n], logprobs=logprobs)
    else:
        finish = "stop"
    tail = stops.flush()
    yield Chunk(
        text=tail,
        finish_reason=finish,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=produced),
    )


@hookimpl
def embed(model: TestModel, request: EmbedRequest) -> EmbedResult:
    dims = request.dimensions or 8
    vectors = []
    texts = [" ".join(f"t{i}" for i in ids) for ids in request.input_ids] if request.input_ids else request.input
    for text in texts:
        digest = hashlib.sha256(text.encode()).digest()
        vec = [(digest[i % len(digest)] - 128) / 128 for i in range(dims)]
        norm = sum(v * v for v in vec) ** 0.5 or 1.0
        vectors.append([v / norm for v in vec])
    return EmbedResult(embeddings=vectors, prompt_tokens=sum(len(t.split()) for t in texts))


@hookimpl
def convert_ids_to_tokens(model: TestModel, ids: list[list[int]]) -> list[list[str]]:
    # The test vocabulary is WORDS: id i is its i-th word.
    for row in ids:
        for i in row:
            if not 0 <= i < len(WORDS):
                raise InvalidRequest(f"token id {i} is outside the vocabulary (0-{len(WORDS) - 1})", param="input")
    return [[WORDS[i] for i in row] for row in ids]


def _prompt_text(request: GenerateRequest) -> str:
    if request.messages is None:
        if request.prompt_ids is not None:
            return " ".join(f"t{i}" for i in request.prompt_ids)  # one word per token id
        return request.prompt or ""
    parts = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):  # an image is one word
            content = " ".join("<image>" if is_image(p) else str(p.get("text", "")) for p in content)
        parts.append(str(content or ""))
    return " ".join(parts)


def _describe(image: Image) -> str:
    return f"{image.media_type} {len(image.data)} bytes sha256:{hashlib.sha256(image.data).hexdigest()[:16]}"


def _pieces(opts: TestOptions, prompt: str, seed: int | None) -> list[str]:
    if opts.script is not None:
        sizes = opts.chunks or [len(opts.script) or 1]
        pieces, pos, i = [], 0, 0
        while pos < len(opts.script):
            size = max(1, sizes[i % len(sizes)])
            pieces.append(opts.script[pos : pos + size])
            pos += size
            i += 1
        return pieces
    start = int.from_bytes(hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[:4], "big")
    return [(" " if i else "") + WORDS[(start + 7 * i) % len(WORDS)] for i in range(4096)]
