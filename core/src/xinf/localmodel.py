"""Specs for models given only by their files: a GGUF file or a model directory."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from xinf.errors import LaunchError
from xinf.types import ModelSource, ModelSpec


def with_path(spec: ModelSpec, path: str) -> ModelSpec:
    return msgspec.structs.replace(spec, source=ModelSource(path=path))


def spec_from_path(path: str, name: str | None, format: str | None, quantization: str | None) -> ModelSpec:
    """A spec for a model given only by its files: a GGUF file or a Hugging Face directory."""
    local = Path(path).expanduser()
    if not local.exists():
        raise LaunchError(f"model path {local} does not exist", param="model_path")
    abilities = ["chat", "generate"]
    model_type = "LLM"
    if format is None:
        if local.is_file() and local.suffix == ".gguf":
            format = "ggufv2"
        elif local.is_dir() and (local / "config.json").exists():
            format = "mlx" if is_mlx(local) else "pytorch"
        else:
            raise LaunchError(
                f"cannot tell the format of {local}: pass model_format (a .gguf file or a directory "
                "with config.json is recognised)",
                param="model_format",
            )
    if local.is_dir() and (local / "modules.json").exists():
        abilities, model_type = ["embed"], "embedding"
    return ModelSpec(
        name=name or (local.stem if local.is_file() else local.name),
        format=format,
        abilities=abilities,
        model_type=model_type,  # type: ignore[arg-type]
        quantization=quantization or "none",
        source=ModelSource(path=str(local.resolve())),
    )


def is_mlx(local: Path) -> bool:
    """MLX-quantized checkpoints record their group size in config.json."""
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError):
        return False
    quant = config.get("quantization") if isinstance(config, dict) else None
    return isinstance(quant, dict) and "group_size" in quant
