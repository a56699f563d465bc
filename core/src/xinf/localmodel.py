"""Specs for models given only by their files: a GGUF file or a model directory."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from xinf.engine import ModelSource, ModelSpec
from xinf.errors import LaunchError


def with_path(spec: ModelSpec, path: str) -> ModelSpec:
    return msgspec.structs.replace(spec, source=ModelSource(path=path))


#: a model type's abilities when a launch gives only files
TYPE_ABILITIES = {
    "LLM": ["chat", "generate"],
    "embedding": ["embed"],
    "rerank": ["rerank"],
    "image": ["text2image"],
}


def spec_from_path(
    path: str, name: str | None, format: str | None, quantization: str | None, model_type: str | None = None
) -> ModelSpec:
    """A spec for a model given only by its files.

    Recognised: a GGUF file, a Hugging Face directory (an embedding model when
    it has ``modules.json``, a reranker when its architecture is a
    sequence classifier), a diffusers pipeline (``model_index.json``), a
    CTranslate2 Whisper directory and a Piper voice (``.onnx`` with its
    ``.onnx.json``).  ``model_type`` (the launch's) overrides the guess.
    """
    local = Path(path).expanduser()
    if not local.exists():
        raise LaunchError(f"model path {local} does not exist", param="model_path")
    guessed_format, guessed_type, abilities = _guess(local)
    format = format or guessed_format
    if format is None:
        raise LaunchError(
            f"cannot tell the format of {local}: pass model_format (a .gguf file or a directory "
            "with config.json is recognised)",
            param="model_format",
        )
    if model_type is not None and model_type != guessed_type:
        abilities = TYPE_ABILITIES.get(model_type, abilities)
    return ModelSpec(
        name=name or (local.stem if local.is_file() else local.name),
        format=format,
        abilities=abilities,
        model_type=(model_type or guessed_type),  # type: ignore[arg-type]
        quantization=quantization or "none",
        source=ModelSource(path=str(local.resolve())),
    )


def _guess(local: Path) -> tuple[str | None, str, list[str]]:
    """(format, model type, abilities) from a model's files."""
    if local.is_file():
        if local.suffix == ".gguf":
            return "ggufv2", "LLM", ["chat", "generate"]
        if local.suffix == ".onnx" and local.with_name(local.name + ".json").exists():
            return "onnx", "audio", ["text2audio"]
        return None, "LLM", ["chat", "generate"]
    if (local / "model_index.json").exists():
        return "pytorch", "image", ["text2image"]
    if (local / "model.bin").exists() and (local / "config.json").exists():
        return "ctranslate2", "audio", ["audio2text"]  # a CTranslate2 conversion (faster-whisper)
    if not (local / "config.json").exists():
        return None, "LLM", ["chat", "generate"]
    if (local / "modules.json").exists() and not _classifier(local):
        return "pytorch", "embedding", ["embed"]
    if _classifier(local):
        return "pytorch", "rerank", ["rerank"]
    return ("mlx" if is_mlx(local) else "pytorch"), "LLM", ["chat", "generate"]


def _classifier(local: Path) -> bool:
    """A sequence-classification head: what cross-encoder rerankers are."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return any(str(a).endswith("ForSequenceClassification") for a in architectures or [])


def is_mlx(local: Path) -> bool:
    """MLX-quantized checkpoints record their group size in config.json."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    quant = config.get("quantization") if isinstance(config, dict) else None
    return isinstance(quant, dict) and "group_size" in quant
