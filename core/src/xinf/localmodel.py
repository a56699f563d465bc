"""Specs for models given only by their files: a GGUF file or a model directory.

What the files say is taken into the spec, so that ``xinf list`` shows a model given by path like a catalogue one:
a GGUF header gives the parameter count, the quantization and the context length; a Hugging Face directory gives
the context length (``config.json``), the parameter count (the safetensors headers) and a GPTQ/AWQ bit width.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import msgspec

from xinf.errors import LaunchError
from xinf.types import ModelSource, ModelSpec

log = logging.getLogger(__name__)


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
    facts = file_facts(local)
    return ModelSpec(
        name=name or (local.stem if local.is_file() else local.name),
        format=format,
        abilities=abilities,
        model_type=(model_type or guessed_type),  # type: ignore[arg-type]
        size_in_billions=facts.get("size_in_billions"),
        quantization=quantization or facts.get("quantization") or "none",
        context_length=facts.get("context_length"),
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
    abilities = ["chat", "generate", "vision"] if _has_vision(local) else ["chat", "generate"]
    return ("mlx" if is_mlx(local) else "pytorch"), "LLM", abilities


def _has_vision(local: Path) -> bool:
    """An image-text-to-text model (LLaVA, Qwen2-VL, Gemma 3...): its config describes a vision tower."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


def _classifier(local: Path) -> bool:
    """A sequence-classification head: what cross-encoder rerankers are."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return any(str(a).endswith("ForSequenceClassification") for a in architectures or [])


def file_facts(local: Path) -> dict[str, Any]:
    """Size in billions, quantization and context length where the files say them (missing keys: unknown)."""
    try:
        if local.is_file() and local.suffix == ".gguf":
            return _gguf_facts(local)
        if local.is_dir():
            return _directory_facts(local)
    except (OSError, ValueError, struct.error) as exc:  # a file we cannot read describes nothing; loading says why
        log.info("could not read what %s says about itself: %s", local, exc)
    return {}


def billions(parameters: int) -> float | None:
    return round(parameters / 1e9, 3) if parameters else None


def _gguf_facts(path: Path) -> dict[str, Any]:
    from xinf.gguf import read_header

    header = read_header(path)
    facts = {
        "size_in_billions": billions(header.parameters),
        "quantization": header.file_type,
        "context_length": header.context_length,
    }
    return {k: v for k, v in facts.items() if v is not None}


def _directory_facts(local: Path) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict):
        nested = config.get("text_config")
        text: dict[str, Any] = nested if isinstance(nested, dict) else config
        context = text.get("max_position_embeddings")
        if isinstance(context, int):
            facts["context_length"] = context
        quant = config.get("quantization_config")
        if isinstance(quant, dict) and isinstance(quant.get("bits"), int):
            facts["quantization"] = f"Int{quant['bits']}"
    size = billions(sum(_safetensors_parameters(f) for f in sorted(local.glob("*.safetensors"))))
    if size:
        facts["size_in_billions"] = size
    return facts


def _safetensors_parameters(path: Path) -> int:
    """Elements of every tensor in a safetensors file, from its JSON header (the data is not read)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 << 20:
            raise ValueError(f"{path.name}: safetensors header of {length} bytes")
        header = json.loads(f.read(length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        count = 1
        for d in info.get("shape", []):
            count *= int(d)
        total += count
    return total


def is_mlx(local: Path) -> bool:
    """MLX-quantized checkpoints record their group size in config.json."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    quant = config.get("quantization") if isinstance(config, dict) else None
    return isinstance(quant, dict) and "group_size" in quant
