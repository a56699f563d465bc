"""Audio routes: ``/v1/audio/transcriptions`` and ``/translations`` (OpenAI's multipart shape) and ``/speech``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from xinf.audio import MEDIA_TYPES, Encoder, check_format
from xinf.errors import InvalidRequest
from xinf.operations import AudioChunk, SpeechRequest, TranscribeRequest, TranscribeResult, TranscribeStreamRequest
from xinf.schemas_audio import TRANSCRIPT_FORMATS, TRANSCRIPTION_FIELDS, SpeechBody
from xinf.server.http import check_multipart, decode, json_response, read_body
from xinf.server.state import state
from xinf.server.streams import until_disconnect
from xinf.server.transcripts import transcript_stream
from xinf.server.types import model_for

# ---------------------------------------------------------------- speech to text


async def transcriptions(request: Request) -> Response:
    return await _transcribe(request, "transcribe")


async def translations(request: Request) -> Response:
    return await _transcribe(request, "translate")


async def _transcribe(request: Request, task: str) -> Response:
    st = state(request)
    check_multipart(request, st.max_body, "file", "the audio")
    async with request.form(max_files=1, max_fields=64) as form:
        unknown = sorted(set(form.keys()) - TRANSCRIPTION_FIELDS)
        if unknown:
            raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("the audio file is missing: send it in the 'file' field", param="file")
        audio = await upload.read()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    model = model_for(st, fields.get("model", ""), "audio2text")
    if not audio:
        raise InvalidRequest("the audio file is empty", param="file", code="invalid_audio")
    fmt = fields.get("response_format") or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise InvalidRequest(
            f"response_format {fmt!r} is not supported; use one of {', '.join(TRANSCRIPT_FORMATS)}",
            param="response_format",
        )
    bad = [g for g in granularities if g not in ("word", "segment")]
    if bad:
        raise InvalidRequest(
            f"timestamp_granularities may hold word and segment, not {bad[0]!r}", param="timestamp_granularities"
        )
    heard = TranscribeRequest(
        audio=audio,
        task=task,  # type: ignore[arg-type]
        language=fields.get("language") or None,
        prompt=fields.get("prompt") or None,
        temperature=_temperature(fields.get("temperature")),
        word_timestamps="word" in granularities,
    )
    if fields.get("stream", "false").lower() == "true":
        return await transcript_stream(model, TranscribeStreamRequest(**msgspec.structs.asdict(heard)), fmt)
    result: TranscribeResult = await until_disconnect(request, model.serve(heard))
    return _transcript(result, fmt, task, "word" in granularities)


def _temperature(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    try:
        t = float(value)
    except ValueError:
        raise InvalidRequest(f"temperature must be a number, not {value!r}", param="temperature") from None
    if not 0 <= t <= 1:
        raise InvalidRequest("temperature must be between 0 and 1", param="temperature")
    return t


def _transcript(result: TranscribeResult, fmt: str, task: str, words: bool) -> Response:
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(_srt(result))
    if fmt == "vtt":
        return PlainTextResponse(_vtt(result), media_type="text/vtt")
    if fmt == "json":
        return json_response({"text": result.text})
    body: dict[str, Any] = {
        "task": task,
        "language": result.language,
        "duration": result.duration,
        "text": result.text,
        "segments": [{**_segment(s), "seek": 0} for s in result.segments],
    }
    if words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words or []]
    return json_response(body)


def _segment(s: Any) -> dict[str, Any]:
    return {
        "id": s.id,
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": s.tokens,
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    }


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _srt(result: TranscribeResult) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(result.segments, 1)
    ]
    return "\n".join(blocks)


def _vtt(result: TranscribeResult) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in result.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


# ---------------------------------------------------------------- text to speech


async def speech(request: Request) -> Response:
    st = state(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "voice cloning from a prompt recording is not supported; send a JSON body", param="prompt_speech"
        )
    body = decode(await read_body(request, st.max_body), SpeechBody)
    model = model_for(st, body.model, "text2audio")
    if not body.input.strip():
        raise InvalidRequest("input must not be empty", param="input")
    check_format(body.response_format)
    pieces = cast(
        AsyncIterator[AudioChunk], model.stream(SpeechRequest(input=body.input, voice=body.voice, speed=body.speed))
    )
    try:
        first = await pieces.__anext__()  # errors before any audio get their proper status
    except StopAsyncIteration:
        raise InvalidRequest("the model produced no audio for this input", param="input") from None
    except BaseException:
        await pieces.aclose()  # type: ignore[attr-defined]
        raise
    media_type = MEDIA_TYPES[body.response_format]
    headers = {"X-Sample-Rate": str(first.sample_rate)}
    if not body.stream:
        encoder = Encoder(body.response_format, first.sample_rate, first.channels, streaming=False)
        parts = [encoder.feed(first.pcm)]
        async for piece in pieces:
            parts.append(encoder.feed(piece.pcm))
        parts.append(encoder.close())
        return Response(b"".join(parts), media_type=media_type, headers=headers)
    return StreamingResponse(_stream(first, pieces, body.response_format), media_type=media_type, headers=headers)


async def _stream(first: AudioChunk, rest: AsyncIterator[Any], fmt: str) -> AsyncIterator[bytes]:
    encoder = Encoder(fmt, first.sample_rate, first.channels, streaming=True)
    try:
        yield encoder.feed(first.pcm)
        async for piece in rest:
            data = encoder.feed(piece.pcm)
            if data:
                yield data
        yield encoder.close()
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
