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

from xinf.types import Chunk, EmbedRequest, EmbedResult, GenerateRequest, LoraAdapter, ModelSpec, Placement

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


class Cancel(Frame):
    id: int


class Ping(Frame):
    id: int


class Shutdown(Frame):
    pass


class Adapters(Frame):
    """Add and remove LoRA adapters on a running model; answered by ``Pong`` or ``Fail``."""

    id: int
    add: list[LoraAdapter]
    remove: list[str]


# replica -> server


class Hello(Frame):
    pid: int
    info: dict[str, Any]


class Out(Frame):
    id: int
    chunk: Chunk


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


AnyFrame = Launch | Generate | Embed | Cancel | Ping | Shutdown | Hello | Out | Done | Fail | Embedded | Pong | Adapters

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
