"""Requests an engine serves besides ``generate`` and ``embed``: rerank, speech to text, text to speech, images.

Each result says what it counts for the metrics (``units``: documents
ranked, seconds of audio heard or spoken, images made).  Each request type
names the hook that serves it (``OPERATIONS``), so the replica
loop, the server's replica handle and ``RunningModel`` carry every one of them
the same way: a ``Call`` frame naming the hook out, a ``Returned`` frame back,
or ``Piece`` frames for a hook that streams (``speech``).  A new model type adds its request
and result here, a hook in ``hookspecs.py`` and a route module; the launch
path, placement, replicas and routing stay the same.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# ---------------------------------------------------------------- rerank


class RerankRequest(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Score every document against ``query``; the core sorts and cuts to ``top_n``."""

    query: str
    documents: list[str]


class RerankResult(msgspec.Struct, tag=True, kw_only=True):
    """One score per document, in the request's order.

    ``tokens[i]`` is the length of the (query, document i) pair in tokens as the
    model saw it; ``truncated`` lists the documents cut to the model's maximum
    length.
    """

    scores: list[float]
    tokens: list[int]
    truncated: list[int] = msgspec.field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)

    def units(self) -> tuple[str, float]:
        return "documents", float(len(self.scores))


# ---------------------------------------------------------------- speech to text


class TranscribeRequest(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """An uploaded audio file to transcribe (or, with ``task="translate"``, to translate into English)."""

    audio: bytes
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False


class Word(msgspec.Struct, kw_only=True):
    word: str
    start: float
    end: float


class Segment(msgspec.Struct, kw_only=True):
    """One stretch of speech with its times in seconds, as OpenAI's ``verbose_json`` lists them."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = msgspec.field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class TranscribeResult(msgspec.Struct, tag=True, kw_only=True):
    text: str
    language: str
    duration: float
    segments: list[Segment] = msgspec.field(default_factory=list)
    words: list[Word] | None = None

    def units(self) -> tuple[str, float]:
        return "audio_seconds_in", self.duration


class TranscribeStreamRequest(TranscribeRequest, tag=True):
    """A transcription whose text is sent as it is heard (``stream=true``): the ``transcribe_stream`` hook."""


class TranscriptPiece(msgspec.Struct, tag=True, kw_only=True):
    """A streamed transcription's next words (one segment's ``text``).

    The first piece comes before any text: it carries the audio's ``language``
    and ``duration`` (counted once, in the metrics), with ``text`` empty.
    """

    text: str = ""
    language: str = ""
    duration: float = 0.0

    def units(self) -> tuple[str, float]:
        return "audio_seconds_in", self.duration


# ---------------------------------------------------------------- text to speech


class SpeechRequest(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Text to speak.  ``voice`` is the engine's voice name ("" for the model's default)."""

    input: str
    voice: str = ""
    speed: float = 1.0


class AudioChunk(msgspec.Struct, tag=True, kw_only=True):
    """A piece of synthesised speech: 16-bit signed little-endian PCM, mono unless ``channels`` says."""

    pcm: bytes
    sample_rate: int
    channels: int = 1

    def units(self) -> tuple[str, float]:
        return "audio_seconds_out", len(self.pcm) / (2 * self.channels * self.sample_rate)


# ---------------------------------------------------------------- images


class ImageRequest(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Generate ``n`` images of ``width`` x ``height`` for ``prompt``; options left None are the pipeline's."""

    prompt: str
    n: int = 1
    width: int = 512
    height: int = 512
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None


class ImageEditRequest(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Redraw ``image`` (an uploaded picture's bytes) after ``prompt``: image to image.

    ``width`` and ``height`` None keep the picture's size; ``strength`` (0-1) is
    how far the result may move from the picture (None: the pipeline's default).
    """

    image: bytes
    prompt: str
    n: int = 1
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    strength: float | None = None


class ImageResult(msgspec.Struct, tag=True, kw_only=True):
    """PNG files, one per image."""

    images: list[bytes]

    def units(self) -> tuple[str, float]:
        return "images", float(len(self.images))


# ---------------------------------------------------------------- the table

Request = RerankRequest | TranscribeRequest | TranscribeStreamRequest | SpeechRequest | ImageRequest | ImageEditRequest
Result = RerankResult | TranscribeResult | TranscriptPiece | AudioChunk | ImageResult


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """The hook serving a request type, its result type, the ability a model needs, and whether the hook streams."""

    hook: str
    ability: str
    request: type
    result: type
    streams: bool = False


OPERATIONS: dict[type, Operation] = {
    RerankRequest: Operation(hook="rerank", ability="rerank", request=RerankRequest, result=RerankResult),
    TranscribeRequest: Operation(
        hook="transcribe", ability="audio2text", request=TranscribeRequest, result=TranscribeResult
    ),
    TranscribeStreamRequest: Operation(
        hook="transcribe_stream",
        ability="audio2text",
        request=TranscribeStreamRequest,
        result=TranscriptPiece,
        streams=True,
    ),
    SpeechRequest: Operation(
        hook="speech", ability="text2audio", request=SpeechRequest, result=AudioChunk, streams=True
    ),
    ImageRequest: Operation(hook="text_to_image", ability="text2image", request=ImageRequest, result=ImageResult),
    # A text-to-image pipeline can start from a picture: image edits go to text2image models that have the hook.
    ImageEditRequest: Operation(
        hook="image_to_image", ability="text2image", request=ImageEditRequest, result=ImageResult
    ),
}
#: the same, by hook name: what a replica looks up for a ``Call`` frame
BY_HOOK: dict[str, Operation] = {op.hook: op for op in OPERATIONS.values()}


def operation(request: Request) -> Operation:
    return OPERATIONS[type(request)]
