"""Frames between the server and a replica process.

Each frame is a 4-byte big-endian length followed by a msgpack-encoded tagged
struct.  The same frames would work over TCP, so a replica could live on
another machine.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from xinf.types import Chunk, EmbedRequest, EmbedResult, GenerateRequest, ModelSpec, Placement

HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20


class Frame(msgspec.Struct, tag=True, array_like=True):
    pass


# server -> replica


class Launch(Frame):
    engine: str
    spec: ModelSpec
    options: dict[str, Any]
    placement: Placement
    enable_thinking: bool | None = None


class Generate(Frame):
    id: int
    request: GenerateRequest
    n: int = 1


class Embed(Frame):
    id: int
    request: EmbedRequest


class Call(Frame):
    """An engine hook called by name with the loaded model and ``args``: ``convert_ids_to_tokens``, and the hooks of
    the other model types (``rerank``, ``transcribe``, ``speech``, ``text_to_image``: ``args["request"]`` is a
    request struct of ``xinf.operations``)."""

    id: int
    hook: str
    args: dict[str, Any]


class Cancel(Frame):
    id: int


class Ping(Frame):
    id: int


class Shutdown(Frame):
    pass


class Adopt(Frame):
    """A pooled worker (``xinf.warmpool``) becomes a replica: it takes this environment and writes to ``log``;
    ``Launch`` follows."""

    env: dict[str, str]
    log: str


# replica -> server


class Hello(Frame):
    pid: int
    info: dict[str, Any]


class Idle(Frame):
    """A pooled worker is up with its engine's libraries imported; ``driver``: it loaded a GPU driver meanwhile
    (so it can no longer be shown other devices)."""

    pid: int
    driver: bool = False


class Out(Frame):
    """Chunks of a ``Generate``, in order: every chunk the replica had ready when it wrote the frame."""

    id: int
    chunks: list[Chunk]


class Done(Frame):
    id: int


class Fail(Frame):
    id: int
    status: int
    error: dict[str, Any]


class Embedded(Frame):
    id: int
    result: EmbedResult


class Pong(Frame):
    id: int


class Returned(Frame):
    """The value of a ``Call``: a plain value, or a result struct of ``xinf.operations`` (sent as a map)."""

    id: int
    value: Any


class Piece(Frame):
    """One value of a ``Call`` whose hook streams (``speech``); ``Done`` follows the last."""

    id: int
    value: Any


AnyFrame = (
    Launch
    | Generate
    | Embed
    | Call
    | Cancel
    | Ping
    | Shutdown
    | Adopt
    | Hello
    | Idle
    | Out
    | Done
    | Fail
    | Embedded
    | Pong
    | Returned
    | Piece
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyFrame] = msgspec.msgpack.Decoder(AnyFrame)


def encode(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> AnyFrame:
    """The next frame; raises ``asyncio.IncompleteReadError`` at end of stream."""
    header = await reader.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return _decoder.decode(await reader.readexactly(size))
