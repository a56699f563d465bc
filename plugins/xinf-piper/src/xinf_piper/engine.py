"""Piper voices: text to 16-bit PCM, one sentence at a time, in a worker thread.

Piper splits the text into sentences (espeak-ng's phonemizer) and synthesises
each on its own, so the first sentence streams while the next is made.
Voices: a multi-speaker voice names its speakers (``speaker_id_map``); a
single-speaker one answers to its own name, to "" and, so that OpenAI clients
(whose ``voice`` is required) work unchanged, to OpenAI's voice names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xinf.engine import ModelSpec
from xinf.errors import InvalidRequest, LaunchError
from xinf.operations import AudioChunk, SpeechRequest

log = logging.getLogger(__name__)
OPTIONS = ("threads", "noise_scale", "noise_w_scale")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
_END = object()


def voice_file(path: Path) -> Path | None:
    """The ``.onnx`` voice at ``path`` (a file, or the one in a directory) that has its ``.onnx.json``."""
    if path.is_file():
        return path if path.with_name(path.name + ".json").exists() else None
    if path.is_dir():
        for f in sorted(path.glob("*.onnx")):
            if f.with_name(f.name + ".json").exists():
                return f
    return None


class PiperEngine:
    """A loaded Piper voice and the thread that runs it."""

    def __init__(self, voice: Any, name: str, noise: dict[str, float]):
        self.voice = voice
        self.name = name
        self.noise = noise
        self.speakers: dict[str, int] = dict(voice.config.speaker_id_map or {})
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-piper")

    @classmethod
    def load(cls, spec: ModelSpec, options: dict[str, Any], on_cuda: bool) -> PiperEngine:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise LaunchError(
                f"unknown option(s) for piper: {', '.join(unknown)}; known: {', '.join(OPTIONS)}", param=unknown[0]
            )
        found = voice_file(Path(spec.source.path or ""))
        if found is None:
            raise LaunchError(f"{spec.name}: no Piper voice (.onnx with its .onnx.json) at {spec.source.path!r}")
        from piper import PiperVoice

        try:
            voice = PiperVoice.load(found, use_cuda=on_cuda)
        except Exception as exc:  # onnxruntime raises its own error types
            raise LaunchError(f"piper could not load {found}: {type(exc).__name__}: {exc}") from None
        if options.get("threads"):
            _set_threads(voice, int(options["threads"]), found, on_cuda)
        noise = {k: float(options[k]) for k in ("noise_scale", "noise_w_scale") if k in options}
        log.info("loaded Piper voice %s (%d Hz)", found.name, voice.config.sample_rate)
        return cls(voice, spec.name, noise)

    def speaker(self, name: str) -> int | None:
        if self.speakers:
            if not name:
                return None
            if name not in self.speakers:
                listed = ", ".join(sorted(self.speakers))
                raise InvalidRequest(f"unknown voice {name!r}; this model's voices: {listed}", param="voice")
            return self.speakers[name]
        if name and name not in (self.name, *OPENAI_VOICES):
            raise InvalidRequest(
                f"unknown voice {name!r}; {self.name} has one voice: use {self.name!r} (or leave voice empty)",
                param="voice",
            )
        return None

    async def speak(self, request: SpeechRequest) -> AsyncIterator[AudioChunk]:
        from piper import SynthesisConfig

        config = SynthesisConfig(speaker_id=self.speaker(request.voice), length_scale=1.0 / request.speed, **self.noise)
        chunks: Iterator[Any] = self.voice.synthesize(request.input, syn_config=config)
        loop = asyncio.get_running_loop()
        while True:
            chunk = await loop.run_in_executor(self.pool, next, chunks, _END)
            if chunk is _END:
                return
            yield AudioChunk(pcm=chunk.audio_int16_bytes, sample_rate=chunk.sample_rate, channels=chunk.sample_channels)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _set_threads(voice: Any, threads: int, path: Path, on_cuda: bool) -> None:
    """Rebuild the voice's ONNX Runtime session with ``threads`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if on_cuda else ["CPUExecutionProvider"]
    voice.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
