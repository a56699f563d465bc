"""Image-text-to-text models: ``AutoModelForImageTextToText`` with the model's ``AutoProcessor``.

A directory is one when its config has a ``vision_config`` (LLaVA, Qwen2-VL,
Gemma 3, Idefics3/SmolVLM...) or its spec has the ``vision`` ability.  The
processor's chat template places the images (``{"type": "image"}`` parts, see
``xinf.vision``), the processor expands each placeholder into the image's
tokens and turns the images into ``pixel_values``; both go to ``generate()``.
Such models run one request at a time (``SerialRunner``): continuous batching
takes token ids only.  Their usage counts the image tokens in ``prompt_tokens``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from xinf.errors import InvalidRequest, LaunchError
from xinf.prompts import render_chat
from xinf.types import GenerateRequest, ModelSpec
from xinf.vision import images_of


def is_vision(spec: ModelSpec, path: str) -> bool:
    if "vision" in spec.abilities:
        return True
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


def load(path: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """(processor, model) of an image-text-to-text directory."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise LaunchError(f"transformers could not load {path} as an image-text-to-text model: {exc}") from None
    if getattr(processor, "tokenizer", None) is None or not hasattr(processor, "image_processor"):
        raise LaunchError(f"{path}: its processor ({type(processor).__name__}) has no tokenizer and image processor")
    return processor, model


def prepare(processor: Any, spec: ModelSpec, request: GenerateRequest, model: Any) -> tuple[list[int], dict[str, Any]]:
    """The prompt's token ids (each image's tokens included) and the other model inputs (``pixel_values``...)."""
    if not request.is_chat:
        tokenizer = processor.tokenizer
        if request.prompt_ids is not None:
            return list(request.prompt_ids), {}
        return list(tokenizer.encode(request.prompt or "")), {}
    text = render_chat(processor, spec, request, images=True)
    images = [_open(image.data, n) for n, image in enumerate(images_of(request.messages))]
    try:
        inputs = processor(text=[text], images=images or None, return_tensors="pt")
    except (ValueError, TypeError) as exc:  # e.g. a template that placed fewer images than were sent
        raise InvalidRequest(f"the model's processor refused the images: {exc}", param="messages") from None
    ids = [int(i) for i in inputs.pop("input_ids")[0].tolist()]
    inputs.pop("attention_mask", None)
    return ids, {k: _to(v, model) for k, v in inputs.items()}


def _to(value: Any, model: Any) -> Any:
    """A processor's tensor on the model's device; pixel values in the model's dtype."""
    if not hasattr(value, "to"):
        return value
    if value.is_floating_point():
        return value.to(device=model.device, dtype=model.dtype)
    return value.to(model.device)


def _open(data: bytes, n: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequest(f"image {n + 1} of the request could not be decoded: {exc}", param="messages") from None
    return image.convert("RGB")  # the first frame of a GIF; processors want RGB
