"""The engine plugin contract.

An engine plugin is a module registered under the ``xinf.engines`` entry-point
group; the entry point's name is the engine's name (``llama.cpp``,
``transformers``...).  It implements these hooks with ``@xinf.hookimpl``.

Hooks are called with keyword arguments.  A plugin may leave out arguments it
does not use.  Plugins must import their engine library (torch, xllamacpp,
vllm, mlx...) inside ``load`` and never at module import: the server and the
CLI import every plugin to list engines and must stay fast.

``match_model`` is asked of every plugin and the core ranks the answers;
the other hooks are only ever called on the one plugin that serves a model, so
hook order never decides anything.

Besides hooks, a plugin module may declare ``VIRTUAL_ENV_PACKAGES: list[str]``:
pip requirements every model of the engine needs.  When virtual environments
are enabled (``XINFERENCE_ENABLE_VIRTUAL_ENV``), such a launch runs its
replicas in an environment holding them (``xinf.virtualenv``).  It may also
declare ``WARM_IMPORTS: list[str]``: modules a warm-pool worker imports before
it is given a launch (``xinf.warmpool``), so a launch costs the model's load and
not the engine library's import, and ``REPLICA_ENV: dict[str, str]``: variables
its replica processes start with unless the server's environment or the
launch's ``envs`` set them (what must be set before the process starts).
The guide for plugin authors is docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from xinf.operations import (
        AudioChunk,
        ImageEditRequest,
        ImageRequest,
        ImageResult,
        RerankRequest,
        RerankResult,
        SpeechRequest,
        TranscribeRequest,
        TranscribeResult,
        TranscribeStreamRequest,
        TranscriptPiece,
    )
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
    )

PROJECT = "xinf"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- choosing an engine


@hookspec
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch | None:
    """Say whether this engine can serve ``spec`` on ``hardware``.

    Called in the server for every installed plugin when a model is launched
    and when ``xinf engines --model`` or ``GET /v1/engines`` asks.  Return an
    ``EngineMatch`` with ``score > 0`` to offer to serve it (the highest score
    wins; ties go to the engine name in alphabetical order), or with
    ``score <= 0`` and a ``reason`` to decline in words a user can act on.
    Returning None means "no opinion": the core records that the engine did
    not claim the model.  Must be cheap and must not import the engine library.
    """


@hookspec
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    """Estimate the memory one replica of ``spec`` needs with launch ``options``.

    Called in the server by the scheduler, only on the engine chosen for the
    model, before anything is loaded.  ``devices`` are the devices the replica
    would be placed on, with their free memory after other reservations (an
    empty list means CPU only).  Engines that can offload part of a model
    choose how many layers fit and say so in ``gpu_layers``.  ``host`` is what
    stays in host memory (everything, on the CPU): the scheduler reserves it
    on the replica's machine and refuses a launch it does not fit.  Return None
    when the engine cannot estimate: the scheduler then places by device count
    only and checks no memory.
    """


# ---------------------------------------------------------------- serving


@hookspec
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    """Load ``spec`` and return the loaded model (any object the engine likes); may be a coroutine function.

    Called once in the replica process, only on the chosen engine; a coroutine
    is awaited on the replica's event loop (where asyncio engines such as
    vLLM's must start).  The process
    already has the model's environment variables and ``CUDA_VISIBLE_DEVICES``
    set from ``placement``, and is pinned to ``placement.cores`` (with
    ``OMP_NUM_THREADS`` and the like sized to them): size the engine's own
    thread options from ``xinf.cores.threads(placement)`` unless the user gave
    them (a ``threads`` attribute of the returned object is shown with the
    replica).  ``spec.source.path`` is the local file or directory.
    Raise ``xinf.errors.LaunchError`` (or any exception) when loading fails:
    the launch fails with that message.  Unknown or invalid ``options`` should
    raise ``LaunchError`` naming them.
    """


@hookspec
def generate(model: Any, request: GenerateRequest) -> AsyncIterator[Chunk]:
    """Return an async iterator of ``Chunk`` for one choice of ``request``.

    Called in the replica process, on the plugin that loaded ``model``, once
    per request (and once per choice when n > 1).  The last chunk carries
    ``finish_reason`` and ``usage``.  When the client goes away the core closes
    the iterator (``aclose``); the engine must then stop the work and free its
    slot.  Raise ``xinf.errors.InvalidRequest`` (or ``ContextLengthExceeded``)
    for requests the engine cannot serve: clients get a 400, not a 500.

    Tool calls: when ``spec.tool_parser`` names a format ``xinf.toolcalls``
    knows (``xinf.toolcalls.known``) and the request has
    ``tools``, the core parses the engine's text into tool calls (the engine
    only renders the tools through the chat template).  An engine that
    constrains decoding for a forced call (``tool_choice`` "required" or named)
    to ``xinf.toolcalls.choice.forced_schema`` says so with a true
    ``constrains_tool_calls`` attribute on its model; the core then reads the
    output as that JSON.  Without a format, an engine that parses tool calls
    itself fills ``Chunk.tool_calls``.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def embed(model: Any, request: EmbedRequest) -> EmbedResult:
    """Embed ``request.input``; may be a coroutine function.

    Called in the replica process for models with the ``embed`` ability, on the
    plugin that loaded ``model``.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


# ---------------------------------------------------------------- other model types
#
# Each is called in the replica process, on the plugin that loaded ``model``,
# once per request of its route, and only for models with the matching
# ability; an engine implements the hooks of the types it serves.  Any of them
# may be a coroutine function.  Raise ``xinf.errors.InvalidRequest`` for a
# request the model cannot serve (clients get a 400 naming the problem).  The
# request and result types are in ``xinf.operations``.


@hookspec
def rerank(model: Any, request: RerankRequest) -> RerankResult:
    """Score each of ``request.documents`` against ``request.query``; may be a coroutine function.

    Called for ``POST /v1/rerank`` on models with the ``rerank`` ability.
    Return one relevance score per document in the request's order (higher is
    more relevant), the tokens of each (query, document) pair, and which
    documents were truncated to the model's maximum length; the core sorts,
    applies ``top_n`` and counts tokens.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def transcribe(model: Any, request: TranscribeRequest) -> TranscribeResult:
    """Turn ``request.audio`` (the uploaded file's bytes) into text; may be a coroutine function.

    Called for ``POST /v1/audio/transcriptions`` and ``/translations``
    (``request.task == "translate"``: the text is English whatever the spoken
    language) on models with the ``audio2text`` ability.  Audio that cannot be
    decoded must raise ``InvalidRequest`` naming the problem.  Segments and
    (when ``word_timestamps``) words carry times in seconds; the core writes
    the response formats (json, text, srt, vtt, verbose_json).
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def transcribe_stream(model: Any, request: TranscribeStreamRequest) -> AsyncIterator[TranscriptPiece]:
    """Return an async iterator of ``TranscriptPiece``: ``request.audio``'s text as it is heard.

    Called for ``POST /v1/audio/transcriptions`` with ``stream=true`` on models
    with the ``audio2text`` ability (the core sends each piece as OpenAI's
    ``transcript.text.delta`` event, then ``transcript.text.done``).  Yield first
    a piece with the audio's language and duration and no text, then one piece
    per segment as soon as it is decoded.  Bad audio raises ``InvalidRequest``
    before the first piece; when the client goes away the core closes the
    iterator.  Engines without it answer ``stream=true`` with a 400.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def speech(model: Any, request: SpeechRequest) -> AsyncIterator[AudioChunk]:
    """Return an async iterator of ``AudioChunk`` (16-bit PCM) speaking ``request.input``.

    Called for ``POST /v1/audio/speech`` on models with the ``text2audio``
    ability.  Yield audio as soon as each piece (a sentence) is ready: the core
    encodes it into the requested format and streams it to the client.  When the
    client goes away the core closes the iterator; stop the work then.  An
    unknown ``request.voice`` must raise ``InvalidRequest`` listing the voices.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def text_to_image(model: Any, request: ImageRequest) -> ImageResult:
    """Generate ``request.n`` images (PNG bytes) for ``request.prompt``; may be a coroutine function.

    Called for ``POST /v1/images/generations`` on models with the
    ``text2image`` ability.  Sizes the model cannot make must raise
    ``InvalidRequest``.  Engines may batch concurrent requests of the same size
    (``XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE``).
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def image_to_image(model: Any, request: ImageEditRequest) -> ImageResult:
    """Redraw ``request.image`` after ``request.prompt``: ``request.n`` PNG images; may be a coroutine function.

    Called for ``POST /v1/images/edits`` and ``/v1/images/variations``
    (xinference-client's ``image_edit`` and ``image_to_image``) on models with
    the ``text2image`` ability whose engine implements it.  ``width`` and
    ``height`` None keep the picture's size.  A picture that cannot be read,
    or a size the model cannot make, must raise ``InvalidRequest``.  Engines
    without it answer those routes with a 400.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def convert_ids_to_tokens(model: Any, ids: list[list[int]]) -> list[list[str]]:
    """The tokens of each list of token ids, as the model's tokenizer spells them; optional.

    Called in the replica process for ``POST /v1/convert_ids_to_tokens``
    (xinference-client's ``convert_ids_to_tokens``) on the plugin that loaded
    ``model``.  An engine without it answers that request with a 400.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def unload(model: Any) -> None:
    """Release ``model``'s resources before the replica process exits; may be a coroutine function.

    Called once in the replica process on orderly shutdown (terminate).  A
    crashed replica never gets here: the OS reclaims its memory.
    """


@hookspec
def update_adapters(model: Any, add: list[LoraAdapter], remove: list[str]) -> None:
    """Load the LoRA adapters ``add`` into ``model`` and drop those named in ``remove``; may be a coroutine function.

    Called in the replica process by ``POST``/``DELETE /v1/models/{uid}/adapters``,
    on the plugin that loaded ``model``, once per replica (a ``Call`` frame:
    ``add`` may arrive as plain maps; ``xinf.adapters.as_adapters`` makes them
    ``LoraAdapter`` s).  Requests name the
    adapters as ``GenerateRequest.adapter`` from then on.  Raise
    ``xinf.errors.InvalidRequest`` (or ``LaunchError``) with the reason when
    the change cannot be made.  An engine without this hook serves the
    adapters it was launched with until it is launched again.
    """
