"""Which files of a repository a launch needs: one GGUF file, or the weights and configs of one format."""

from __future__ import annotations

from fnmatch import fnmatch

from xinf.errors import LaunchError
from xinf.types import ModelSpec

# Configs, tokenizers, chat templates, custom code: small, and engines need them.
SIDE_FILES = ("*.json", "*.model", "*.tiktoken", "tokenizer*", "*.txt", "*.jinja", "*.py")
# Other formats of the same weights that repositories often carry.
SKIP_DIRS = ("onnx/", "openvino/", "original/", "coreml/", "tf/", "flax/")


def select(paths: list[str], spec: ModelSpec) -> list[str]:
    """The subset of ``paths`` to download for ``spec`` (a GGUF vision model's projector with its weights)."""
    chosen = _select(paths, spec)
    projector = spec.source.projector
    if projector and not projector.startswith("/"):
        if projector not in paths:
            raise LaunchError(f"the projector {projector} is not in the repository", param="multimodal_projector")
        chosen.append(projector)
    return chosen


def _select(paths: list[str], spec: ModelSpec) -> list[str]:
    src = spec.source
    if src.parts:  # a split GGUF: every part, the engine opens the first
        missing = [part for part in src.parts if part not in paths]
        if missing:
            raise LaunchError(f"{', '.join(missing)} not in the repository", param="quantization")
        return list(src.parts)
    if src.file:
        if src.file not in paths:
            raise LaunchError(
                f"{src.file} is not in the repository (it has: {', '.join(sorted(paths)[:20])})",
                param="quantization",
            )
        return [src.file]
    if spec.format == "ggufv2":
        return [_one_gguf(paths, spec)]
    kept = [p for p in paths if not p.startswith(SKIP_DIRS) and not p.endswith(".gguf")]
    weights = [p for p in kept if p.endswith(".safetensors")]
    if not weights:  # older repositories: PyTorch pickles
        weights = [p for p in kept if fnmatch(p.rsplit("/", 1)[-1], "pytorch_model*.bin")]
    side = [p for p in kept if any(fnmatch(p.rsplit("/", 1)[-1], pat) for pat in SIDE_FILES)]
    return sorted(set(weights) | set(side))


def _one_gguf(paths: list[str], spec: ModelSpec) -> str:
    ggufs = [p for p in paths if p.lower().endswith(".gguf")]
    quant = spec.quantization.lower()
    matching = sorted(p for p in ggufs if quant in p.lower().rsplit("/", 1)[-1])
    if not matching:
        raise LaunchError(
            f"no GGUF file for quantization {spec.quantization!r} in the repository "
            f"(files: {', '.join(sorted(ggufs)) or 'none'})",
            param="quantization",
        )
    return matching[0]
