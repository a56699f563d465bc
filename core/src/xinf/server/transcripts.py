"""Streamed transcriptions: ``stream=true`` on ``/v1/audio/transcriptions`` and ``/translations``.

Server-sent events in OpenAI's shape: a ``transcript.text.delta`` event per
segment as the engine hears it (its ``transcribe_stream`` hook), then one
``transcript.text.done`` with the whole text.  Errors before the first piece
(bad audio, an engine that cannot stream) are plain HTTP errors; after it they
end the stream as an ``error`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from starlette.responses import Response

from xinf.errors import InvalidRequest
from xinf.model import RunningModel
from xinf.operations import TranscribeStreamRequest, TranscriptPiece
from xinf.server.streams import sse, stream_error, streamed

#: the response formats a stream can carry (its events hold text only)
STREAM_FORMATS = ("json", "text")


async def transcript_stream(model: RunningModel, request: TranscribeStreamRequest, fmt: str) -> Response:
    if fmt not in STREAM_FORMATS:
        raise InvalidRequest(
            f"response_format {fmt!r} cannot be streamed; use json or text, or stream=false", param="response_format"
        )
    pieces = cast(AsyncIterator[TranscriptPiece], model.stream(request))
    try:
        first = await pieces.__anext__()  # bad audio, or an engine without the hook: a 400 before any event
    except StopAsyncIteration:
        first = TranscriptPiece()
    except BaseException:
        await pieces.aclose()  # type: ignore[attr-defined]
        raise
    return streamed(_events(first, pieces))


async def _events(first: TranscriptPiece, rest: AsyncIterator[TranscriptPiece]) -> AsyncIterator[bytes]:
    text = ""
    try:
        piece: TranscriptPiece | None = first
        while piece is not None:
            if piece.text:
                text += piece.text
                yield sse({"type": "transcript.text.delta", "delta": piece.text})
            piece = await anext(rest, None)
        yield sse({"type": "transcript.text.done", "text": text.strip()})
    except Exception as exc:
        yield stream_error("transcription", exc)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
