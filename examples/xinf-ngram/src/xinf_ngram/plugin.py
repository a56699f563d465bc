"""The ngram engine's hooks: only the contract with xinf; the model lives in ``engine.py``.

A model is a text file, launched with ``model_format`` "ngram"::

    xinf launch --model-path corpus.txt --model-format ngram --model-engine ngram

The package ships one corpus (``corpus/sea.txt``); ``corpus_path()`` says where.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from xinf import hookimpl
from xinf.errors import LaunchError
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
)
from xinf_ngram.engine import NgramModel, NgramOptions

ENGINE = "ngram"
FORMAT = "ngram"
# Python's dicts of counters take about this many bytes per byte of corpus text (tracemalloc on corpus/sea.txt: 36).
BYTES_PER_CORPUS_BYTE = 40


def corpus_path() -> Path:
    """The corpus the package ships, for trying the engine without a file of your own."""
    return Path(__file__).with_name("corpus") / "sea.txt"


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    """Serves text files in format "ngram", on any machine (it needs no GPU)."""
    if spec.format != FORMAT:
        return EngineMatch(engine=ENGINE, score=0, reason=f"serves only format {FORMAT!r}, not {spec.format!r}")
    return EngineMatch(engine=ENGINE, score=10)


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    """All of it in host memory (nothing on ``devices``): the counts grow with the corpus."""
    path = spec.source.path
    if path is None or not Path(path).is_file():
        return None  # not downloaded yet: the scheduler places by count
    weights = Path(path).stat().st_size * BYTES_PER_CORPUS_BYTE
    overhead = 1 << 20  # the interpreter's share for the model's objects
    return MemoryEstimate(
        weights=weights, kv_cache=0, overhead=overhead, per_device=[0] * len(devices), host=weights + overhead
    )


@hookimpl
async def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> NgramModel:
    """Count the corpus in a thread; ``load`` may be a coroutine, and xinf awaits it on the replica's loop."""
    parsed = NgramOptions.parse(options)
    if spec.source.path is None:
        raise LaunchError(f"{spec.name} has no local file: launch it with model_path")
    return await asyncio.to_thread(NgramModel.from_file, Path(spec.source.path), parsed)


@hookimpl
def generate(model: NgramModel, request: GenerateRequest) -> AsyncIterator[Chunk]:
    return model.stream(request)


@hookimpl
def embed(model: NgramModel, request: EmbedRequest) -> EmbedResult:
    return model.embed(request.input, request.dimensions)


@hookimpl
def convert_ids_to_tokens(model: NgramModel, ids: list[list[int]]) -> list[list[str]]:
    return model.tokens(ids)


@hookimpl
def unload(model: NgramModel) -> None:
    model.table.clear()  # nothing to release but memory; an engine holding a GPU frees it here
