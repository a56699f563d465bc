"""Bodies of the audio routes: ``/v1/audio/speech`` (JSON) and the multipart fields of transcriptions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_INPUT = 4096  # characters of text to speak (OpenAI's limit)

TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
#: multipart fields a transcription request may carry (OpenAI SDK, xinference-client); others are refused
TRANSCRIPTION_FIELDS = {
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
    "kwargs",
    "include[]",
    "chunking_strategy",
}


class SpeechBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: Annotated[str, Meta(max_length=MAX_INPUT)]
    voice: str = ""
    response_format: str = "mp3"
    speed: Annotated[float, Meta(ge=0.25, le=4.0)] = 1.0
    stream: bool = False
    stream_format: Literal["audio"] = "audio"
    instructions: str | None = None  # accepted; voices here take no instructions
    kwargs: str | dict[str, Any] | None = None  # sent by xinference-client
