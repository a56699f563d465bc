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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
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
    choose how many layers fit and say so in ``gpu_layers``.  Return None when
    the engine cannot estimate: the scheduler then places by device count only.
    """


# ---------------------------------------------------------------- serving


@hookspec
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    """Load ``spec`` and return the loaded model (any object the engine likes).

    Called once in the replica process, only on the chosen engine.  The process
    already has the model's environment variables and ``CUDA_VISIBLE_DEVICES``
    set from ``placement``; ``spec.source.path`` is the local file or directory.
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
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def embed(model: Any, request: EmbedRequest) -> EmbedResult:
    """Embed ``request.input``; may be a coroutine function.

    Called in the replica process for models with the ``embed`` ability, on the
    plugin that loaded ``model``.
    """
    raise NotImplementedError  # a hookspec only declares the hook; pluggy never calls its body


@hookspec
def unload(model: Any) -> None:
    """Release ``model``'s resources before the replica process exits.

    Called once in the replica process on orderly shutdown (terminate).  A
    crashed replica never gets here: the OS reclaims its memory.
    """


@hookspec
def update_adapters(model: Any, add: list[LoraAdapter], remove: list[str]) -> None:
    """Load the LoRA adapters ``add`` into ``model`` and drop those named in ``remove``; may be a coroutine function.

    Called in the replica process by ``POST``/``DELETE /v1/models/{uid}/adapters``,
    on the plugin that loaded ``model``, once per replica.  Requests name the
    adapters as ``GenerateRequest.adapter`` from then on.  Raise
    ``xinf.errors.InvalidRequest`` (or ``LaunchError``) with the reason when
    the change cannot be made.  An engine without this hook serves the
    adapters it was launched with until it is launched again.
    """
