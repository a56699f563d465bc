"""A diffusers pipeline serving text-to-image requests, with batching of same-size requests.

``XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE`` (e.g. ``1024*1024``) turns batching
on for requests of that size, as in Xinference: such requests arriving within
``XINFERENCE_BATCH_INTERVAL`` seconds of each other (and sharing steps,
guidance and negative prompt) go through the pipeline in one call, up to
``XINFERENCE_BATCH_SIZE`` images.  Each image has its own seeded generator, so
an image is the same whether it was batched or not.  Other sizes run alone.

Image to image (``image_to_image``) runs the same components as an img2img
pipeline (``AutoPipelineForImage2Image.from_pipe``: no second copy of the
weights), one request at a time.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xinf.engine import ModelSpec
from xinf.errors import InvalidRequest, LaunchError
from xinf.operations import ImageEditRequest, ImageRequest, ImageResult

log = logging.getLogger(__name__)
OPTIONS = ("num_inference_steps", "guidance_scale", "dtype", "threads")


def batching_size(value: str | None) -> tuple[int, int] | None:
    """``"1024*1024"`` (or ``1024x1024``) -> (width, height); unset -> None."""
    if not value:
        return None
    try:
        width, height = (int(v) for v in value.lower().replace("x", "*").split("*"))
    except ValueError:
        raise LaunchError(f"XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE={value!r}: give a size such as 1024*1024") from None
    return width, height


class ImageEngine:
    """A loaded pipeline, its worker thread and the batcher."""

    def __init__(self, pipe: Any, defaults: dict[str, Any], batch: tuple[int, int] | None, size: int, wait: float):
        self.pipe = pipe
        self.defaults = defaults
        self.batch_size = batch
        self.max_images = max(1, size)
        self.wait = wait
        self.multiple = 8  # diffusers refuses other sizes (its pipelines check height and width % 8)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-diffusers")
        self.pending: dict[tuple[Any, ...], list[tuple[ImageRequest, asyncio.Future[list[bytes]]]]] = {}
        self.timers: dict[tuple[Any, ...], asyncio.TimerHandle] = {}
        self.calls = 0  # pipeline calls made, for the log and the bench
        self.img2img: Any = None  # made from ``pipe`` on the first image-to-image request

    @classmethod
    def load(cls, spec: ModelSpec, options: dict[str, Any], on_cuda: bool) -> ImageEngine:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise LaunchError(
                f"unknown option(s) for diffusers: {', '.join(unknown)}; known: {', '.join(OPTIONS)}", param=unknown[0]
            )
        path = spec.source.path
        if not path or not (Path(path) / "model_index.json").exists():
            raise LaunchError(f"{spec.name}: diffusers needs a pipeline directory with model_index.json, got {path!r}")
        import torch
        from diffusers import DiffusionPipeline

        from xinf.settings import Settings

        settings = Settings.from_env()
        batch = batching_size(settings.text_to_image_batching_size)
        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        dtype = getattr(torch, str(options.get("dtype") or ("float16" if on_cuda else "float32")))
        try:
            pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=dtype)
        except (OSError, ValueError, TypeError) as exc:
            raise LaunchError(f"diffusers could not load {path}: {exc}") from None
        pipe = pipe.to("cuda" if on_cuda else "cpu")
        pipe.set_progress_bar_config(disable=True)
        defaults = {k: options[k] for k in ("num_inference_steps", "guidance_scale") if k in options}
        log.info(
            "loaded %s (%s)%s", path, type(pipe).__name__, f"; batching {batch[0]}x{batch[1]} requests" if batch else ""
        )
        return cls(pipe, defaults, batch, settings.batch_size, settings.batch_interval)

    # ------------------------------------------------------------ requests

    async def generate(self, request: ImageRequest) -> ImageResult:
        if request.width % self.multiple or request.height % self.multiple:
            raise InvalidRequest(
                f"size {request.width}x{request.height} is not supported: width and height must be multiples of "
                f"{self.multiple} for this model",
                param="size",
            )
        seed = request.seed if request.seed is not None else random.randrange(1 << 31)
        request = _with(request, seed=seed)
        loop = asyncio.get_running_loop()
        if self.batch_size != (request.width, request.height):
            return ImageResult(images=await loop.run_in_executor(self.pool, self.run, [request]))
        key = (request.width, request.height, request.steps, request.guidance_scale, request.negative_prompt)
        future: asyncio.Future[list[bytes]] = loop.create_future()
        queue = self.pending.setdefault(key, [])
        queue.append((request, future))
        if sum(r.n for r, _ in queue) >= self.max_images:
            self._flush(key)
        elif key not in self.timers:
            self.timers[key] = loop.call_later(self.wait, self._flush, key)
        return ImageResult(images=await future)

    def _flush(self, key: tuple[Any, ...]) -> None:
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self.pending.pop(key, [])
        if batch:
            asyncio.get_running_loop().create_task(self._run_batch(batch))

    async def _run_batch(self, batch: list[tuple[ImageRequest, asyncio.Future[list[bytes]]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            images = await loop.run_in_executor(self.pool, self.run, [r for r, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        pos = 0
        for request, future in batch:
            if not future.done():  # the client may have gone away
                future.set_result(images[pos : pos + request.n])
            pos += request.n

    # ------------------------------------------------------------ the pipeline

    def settings(self, request: ImageRequest | ImageEditRequest, images: int) -> dict[str, Any]:
        """The pipeline's keyword arguments: the launch's defaults, then what the request says."""
        kwargs: dict[str, Any] = dict(self.defaults)
        if request.steps is not None:
            kwargs["num_inference_steps"] = request.steps
        if request.guidance_scale is not None:
            kwargs["guidance_scale"] = request.guidance_scale
        if request.negative_prompt:
            kwargs["negative_prompt"] = [request.negative_prompt] * images
        return kwargs

    def run(self, requests: list[ImageRequest]) -> list[bytes]:
        """One pipeline call for ``requests`` (same size and settings); PNG bytes, in order."""
        import torch

        first = requests[0]
        prompts, generators = [], []
        for r in requests:
            for i in range(r.n):
                prompts.append(r.prompt)
                generators.append(torch.Generator().manual_seed((r.seed or 0) + i))
        kwargs = self.settings(first, len(prompts))
        self.calls += 1
        if len(requests) > 1:
            log.info("text_to_image: one pipeline call for %d requests (%d images)", len(requests), len(prompts))
        out = self.pipe(
            prompt=prompts, width=first.width, height=first.height, generator=generators, output_type="pil", **kwargs
        )
        return _pngs(out.images)

    # ------------------------------------------------------------ image to image

    async def edit(self, request: ImageEditRequest) -> ImageResult:
        if request.seed is None:
            request = _with(request, seed=random.randrange(1 << 31))
        return ImageResult(images=await asyncio.get_running_loop().run_in_executor(self.pool, self.run_edit, request))

    def run_edit(self, request: ImageEditRequest) -> list[bytes]:
        import torch
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(io.BytesIO(request.image))
            picture.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidRequest(f"could not read the picture: {exc}", param="image") from None
        width = request.width or picture.width - picture.width % self.multiple
        height = request.height or picture.height - picture.height % self.multiple
        if width < self.multiple or height < self.multiple or width % self.multiple or height % self.multiple:
            raise InvalidRequest(
                f"size {width}x{height} is not supported: width and height must be multiples of {self.multiple} "
                "for this model",
                param="size",
            )
        picture = picture.convert("RGB")
        if picture.size != (width, height):
            picture = picture.resize((width, height))
        if self.img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self.img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self.img2img.set_progress_bar_config(disable=True)
        kwargs = self.settings(request, request.n)
        if request.strength is not None:
            kwargs["strength"] = request.strength
        generators = [torch.Generator().manual_seed((request.seed or 0) + i) for i in range(request.n)]
        self.calls += 1
        out = self.img2img(
            prompt=[request.prompt] * request.n, image=picture, generator=generators, output_type="pil", **kwargs
        )
        return _pngs(out.images)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _pngs(images: list[Any]) -> list[bytes]:
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def _with(request: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(request, **changes)
