"""Encoding synthesised speech (16-bit PCM from a TTS engine) into the formats of ``POST /v1/audio/speech``.

wav and pcm need nothing; mp3, opus (in Ogg), aac (ADTS) and flac go through
PyAV, whose wheels carry FFmpeg's encoders (no system ffmpeg).  PyAV is
imported on the first such request, never at start-up.  An encoder takes PCM a
piece at a time and returns the bytes ready so far, so speech streams.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from xinf.errors import InvalidRequest

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
#: format -> (container, codec, sample rate the codec needs or None)
_AV = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48000),
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}


def check_format(fmt: str) -> None:
    """400 before any work when ``fmt`` cannot be written here."""
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"response_format {fmt!r} is not supported; use one of {', '.join(FORMATS)}", param="response_format"
        )
    if fmt in _AV:
        try:
            import av  # noqa: F401
        except ImportError:
            raise InvalidRequest(
                f"response_format {fmt!r} needs PyAV on the server (pip install av); wav and pcm need nothing",
                param="response_format",
            ) from None


def wav_header(sample_rate: int, channels: int, data_bytes: int | None) -> bytes:
    """A RIFF/WAVE header for 16-bit PCM; ``None``: length unknown (streaming), sizes set to the maximum."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )


class Encoder:
    """PCM in, encoded bytes out, a piece at a time."""

    def __init__(self, fmt: str, sample_rate: int, channels: int = 1, *, streaming: bool = True):
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.channels = channels
        self.streaming = streaming
        self.started = False
        self.pending: list[bytes] = []  # a whole (not streamed) wav needs its length in the header
        self.av: Any = None
        self.stream: Any = None  # PyAV's objects: typed loosely (its stubs type every stream kind at once)
        self.container: Any = None
        self.resampler: Any = None
        if fmt in _AV:
            self._open_av()

    def _open_av(self) -> None:
        import av

        container_format, codec, rate = _AV[self.fmt]
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, "w", format=container_format)
        self.stream = self.container.add_stream(codec, rate=rate or self.sample_rate)
        self.stream.layout = "mono" if self.channels == 1 else "stereo"
        self.resampler = av.AudioResampler(
            format=self.stream.codec_context.format.name, layout=self.stream.layout.name, rate=self.stream.rate
        )
        self.av = av

    def feed(self, pcm: bytes) -> bytes:
        if self.fmt == "pcm":
            return pcm
        if self.fmt == "wav":
            if not self.streaming:
                self.pending.append(pcm)
                return b""
            head = b"" if self.started else wav_header(self.sample_rate, self.channels, None)
            self.started = True
            return head + pcm
        return self._encode(pcm)

    def _encode(self, pcm: bytes | None) -> bytes:
        import numpy as np

        frames: list[Any] = []
        if pcm is None:
            frames.append(None)  # flush the resampler and the encoder
        elif pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = self.av.AudioFrame.from_ndarray(samples, format="s16", layout=self.stream.layout.name)
            frame.sample_rate = self.sample_rate
            frames.extend(self.resampler.resample(frame))
        for frame in frames:
            if frame is None:
                for rest in self.resampler.resample(None):
                    self.container.mux(self.stream.encode(rest))
                self.container.mux(self.stream.encode(None))
            else:
                self.container.mux(self.stream.encode(frame))
        return self._take()

    def _take(self) -> bytes:
        data = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return data

    def close(self) -> bytes:
        """The last bytes (the whole file for a wav that was not streamed)."""
        if self.fmt == "pcm":
            return b""
        if self.fmt == "wav":
            if self.streaming:
                return b"" if self.started else wav_header(self.sample_rate, self.channels, None)
            data = b"".join(self.pending)
            return wav_header(self.sample_rate, self.channels, len(data)) + data
        tail = self._encode(None)
        self.container.close()
        return tail + self._take()
