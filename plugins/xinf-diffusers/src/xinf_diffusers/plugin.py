"""The diffusers engine plugin: text-to-image pipelines in a diffusers directory (``model_index.json``).

Hooks only; the runtime is ``engine.py`` (torch and diffusers are imported in
``load``).  Launch options: ``num_inference_steps`` and ``guidance_scale``
(defaults for requests that do not say; otherwise the pipeline's), ``dtype``
(default float32 on CPU, float16 on CUDA), ``threads``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xinf import hookimpl
from xinf.engine import Device, EngineMatch, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf.operations import ImageEditRequest, ImageRequest, ImageResult
from xinf.simpleplugin import match_one_kind, weights_and_overhead

ENGINE = "diffusers"
MiB = 1 << 20


@hookimpl
def match_model(spec: ModelSpec, hardware: Hardware) -> EngineMatch:
    return match_one_kind(
        ENGINE,
        spec,
        model_type="image",
        ability="text2image",
        served="text-to-image",
        model_format="pytorch",
        format_words="diffusers directories",
        reason="a diffusers pipeline",
    )


@hookimpl
def estimate_vram(spec: ModelSpec, options: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    """The pipeline's weight files (in the dtype they will be loaded in) plus activations for a batch."""
    root = Path(spec.source.path or "")
    if not (root / "model_index.json").exists():
        return None
    try:
        parts = [k for k, v in json.loads((root / "model_index.json").read_text()).items() if isinstance(v, list)]
    except (OSError, ValueError):
        return None
    files = [f for part in parts for f in (root / part).glob("*.safetensors") if "fp16" not in f.name]
    weights = sum(f.stat().st_size for f in files)
    if devices and options.get("dtype", "float16") in ("float16", "bfloat16"):
        weights //= 2  # stored in float32, run in half precision
    overhead = 1024 * MiB  # attention maps and VAE decoding of a batch
    return weights_and_overhead(weights, overhead, devices)


@hookimpl
def load(spec: ModelSpec, options: dict[str, Any], placement: Placement) -> Any:
    from xinf_diffusers.engine import ImageEngine

    return ImageEngine.load(spec, options, on_cuda=bool(placement.devices))


@hookimpl
async def text_to_image(model: Any, request: ImageRequest) -> ImageResult:
    return await model.generate(request)


@hookimpl
async def image_to_image(model: Any, request: ImageEditRequest) -> ImageResult:
    return await model.edit(request)


@hookimpl
def unload(model: Any) -> None:
    model.close()
