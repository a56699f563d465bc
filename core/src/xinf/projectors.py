"""Multimodal projectors: the file (llama.cpp's ``mmproj``) that lets a GGUF language model read images.

A GGUF vision model ships its projector beside the language model's file.  The
catalogue lists a family's projectors (Xinference's ``multimodal_projectors``);
a launch picks one with ``multimodal_projector`` (Xinference's launch field;
default: the first listed), or names a file for a model given by path (a path,
relative ones beside the model file).  The pick goes into
``spec.source.projector``: downloads fetch it with the model, the llama.cpp
engine loads it, and the model gets the ``vision`` ability.  A projector given
as llama.cpp's own option (``mmproj.path``) counts too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from xinf.errors import InvalidRequest
from xinf.types import ModelSpec

VISION = "vision"


def option_path(options: dict[str, Any]) -> str | None:
    """llama.cpp's ``mmproj.path`` option, given dotted or nested."""
    nested = options.get("mmproj")
    value = options.get("mmproj.path") or (nested.get("path") if isinstance(nested, dict) else None)
    return str(value) if value else None


def choose(spec: ModelSpec, requested: str | None, options: dict[str, Any]) -> ModelSpec:
    """``spec`` with its projector picked (and the ``vision`` ability), or as it is when it has none."""
    if requested is None and option_path(options):
        return _with_vision(spec)
    if requested is None and not spec.multimodal_projectors:
        return spec
    if spec.format != "ggufv2":
        raise InvalidRequest(
            f"multimodal_projector applies to GGUF models; {spec.name} is {spec.format}", param="multimodal_projector"
        )
    if requested is None:
        requested = spec.multimodal_projectors[0]
        if spec.source.path and not _beside(spec.source.path, requested).is_file():
            return spec  # a local copy without its projector: served as text (images get a 400 saying why)
    if spec.source.path:
        local = _beside(spec.source.path, requested)
        if not local.is_file():
            raise InvalidRequest(f"multimodal_projector {local} is not a file", param="multimodal_projector")
        requested = str(local)
    elif requested not in spec.multimodal_projectors:
        offered = ", ".join(spec.multimodal_projectors) or "none"
        raise InvalidRequest(
            f"{spec.name} offers the projectors {offered}, not {requested!r}", param="multimodal_projector"
        )
    source = msgspec.structs.replace(spec.source, projector=requested)
    return _with_vision(msgspec.structs.replace(spec, source=source))


def _with_vision(spec: ModelSpec) -> ModelSpec:
    if VISION in spec.abilities:
        return spec
    return msgspec.structs.replace(spec, abilities=[*spec.abilities, VISION])


def _beside(model_path: str, name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    model = Path(model_path).expanduser()
    return (model.parent if model.suffix == ".gguf" else model) / path


def local_file(spec: ModelSpec) -> str | None:
    """Where the picked projector is once the model's files are here (None: no projector)."""
    projector = spec.source.projector
    if not projector or not spec.source.path:
        return None
    return str(_beside(spec.source.path, projector))
