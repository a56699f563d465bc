"""Whisper through faster-whisper: decode the upload, transcribe or translate, report segments and words.

One transcription runs at a time per replica, in a worker thread: CTranslate2
already uses every thread it is given for one request, so more replicas (not
more concurrent requests) scale a server.  A streamed transcription hands each
segment to the event loop as soon as faster-whisper decodes it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xinf.engine import ModelSpec
from xinf.errors import InvalidRequest, LaunchError
from xinf.operations import Segment, TranscribeRequest, TranscribeResult, TranscriptPiece, Word

log = logging.getLogger(__name__)
OPTIONS = ("compute_type", "cpu_threads", "beam_size", "vad_filter", "device")
#: faster-whisper's fallback temperatures, used when a request sends temperature 0 or none (as OpenAI's API does)
FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class WhisperEngine:
    """A loaded Whisper model and the thread that runs it."""

    def __init__(self, model: Any, beam_size: int, vad_filter: bool):
        self.model = model
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-whisper")

    @classmethod
    def load(cls, spec: ModelSpec, options: dict[str, Any], on_cuda: bool) -> WhisperEngine:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise LaunchError(
                f"unknown option(s) for faster-whisper: {', '.join(unknown)}; known: {', '.join(OPTIONS)}",
                param=unknown[0],
            )
        path = spec.source.path
        if not path or not (Path(path) / "model.bin").exists():
            raise LaunchError(f"{spec.name}: faster-whisper needs a CTranslate2 model directory, got {path!r}")
        from faster_whisper import WhisperModel

        device = str(options.get("device") or ("cuda" if on_cuda else "cpu"))
        compute = str(options.get("compute_type") or ("float16" if device == "cuda" else "int8"))
        try:
            model = WhisperModel(
                path, device=device, compute_type=compute, cpu_threads=int(options.get("cpu_threads") or 0)
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise LaunchError(f"faster-whisper could not load {path}: {exc}") from None
        log.info("loaded %s on %s (%s)", path, device, compute)
        return cls(model, int(options.get("beam_size") or 5), bool(options.get("vad_filter", False)))

    async def transcribe(self, request: TranscribeRequest) -> TranscribeResult:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.run, request)

    def run(self, request: TranscribeRequest) -> TranscribeResult:
        segments, info = self.begin(request)
        out: list[Segment] = []
        words: list[Word] = []
        for s in segments:  # a generator: decoding happens here
            out.append(
                Segment(
                    id=len(out),
                    start=round(float(s.start), 3),
                    end=round(float(s.end), 3),
                    text=s.text,
                    tokens=list(s.tokens),
                    temperature=float(s.temperature or 0.0),
                    avg_logprob=float(s.avg_logprob),
                    compression_ratio=float(s.compression_ratio),
                    no_speech_prob=float(s.no_speech_prob),
                )
            )
            for w in s.words or []:
                words.append(Word(word=w.word, start=round(float(w.start), 3), end=round(float(w.end), 3)))
        return TranscribeResult(
            text="".join(s.text for s in out).strip(),
            language=info.language,
            duration=round(float(info.duration), 3),
            segments=out,
            words=words if request.word_timestamps else None,
        )

    async def stream(self, request: TranscribeRequest) -> AsyncIterator[TranscriptPiece]:
        """The language and duration first, then each segment's text as soon as it is decoded."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()  # set when the client went away: decoding ends at the next segment
        end = object()

        def work() -> None:
            try:
                segments, info = self.begin(request)
                put(TranscriptPiece(language=info.language, duration=round(float(info.duration), 3)))
                for s in segments:
                    if stop.is_set():
                        break
                    put(TranscriptPiece(text=s.text))
                put(end)
            except BaseException as exc:  # to the event loop, raised there
                put(exc)

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self.pool.submit(work)
        try:
            while (item := await queue.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # the thread ends at its next segment; the next request waits for it in the pool

    def begin(self, request: TranscribeRequest) -> tuple[Any, Any]:
        """Decode the upload and start faster-whisper: its lazy segments and the audio's info."""
        from faster_whisper import decode_audio
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if request.language and request.language not in _LANGUAGE_CODES:
            raise InvalidRequest(f"unknown language {request.language!r}: give an ISO-639-1 code", param="language")
        try:
            audio = decode_audio(io.BytesIO(request.audio))
        except Exception as exc:  # PyAV raises its own error types for every kind of bad input
            raise InvalidRequest(
                f"could not decode the audio file: {type(exc).__name__}: {exc}", param="file", code="invalid_audio"
            ) from None
        if audio.size == 0:
            raise InvalidRequest("the audio file holds no sound", param="file", code="invalid_audio")
        temperature = FALLBACK if not request.temperature else request.temperature
        segments, info = self.model.transcribe(
            audio,
            task=request.task,
            language=request.language,
            initial_prompt=request.prompt or None,
            temperature=temperature,
            beam_size=self.beam_size,
            word_timestamps=request.word_timestamps,
            vad_filter=self.vad_filter,
        )
        return segments, info

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
