"""A GGUF file's header: its metadata and tensor list, read without its data.

The server reads it to describe a model given by path (size, quantization,
context length) and the llama.cpp engine for its memory estimate.  The ggml
types' block sizes (tensor sizes in bytes) and the file types' names are in
tables here: the ``gguf`` package (installed with the llama.cpp engine) has
them too, but importing it imports numpy, 0.1-0.2 s that a launch paid twice
(in the server, then in the replica); it is asked only about a number these
tables do not know (a type newer than them).  We walk the header ourselves instead of using
``gguf.GGUFReader``: the reader turns every vocabulary string into a numpy
view (3 s for SmolLM2's 49k tokens here, far more for a 128k vocabulary), runs
in the server's event loop when the scheduler asks for an estimate, and fails
on files whose tensor data is absent (the header-only files the tests build).
We only need the token count, so long arrays are skipped, not decoded.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

# Arrays longer than this are recorded by their length only (tokens, merges, scores).
_KEEP_ARRAY = 1024


class GGUFError(ValueError):
    """The file is not a GGUF file we can read."""


@dataclass(frozen=True)
class ArrayInfo:
    """A long array in the header, kept as its length."""

    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length
    ggml_type: int

    @property
    def elements(self) -> int:
        count = 1
        for d in self.dims:
            count *= d
        return count

    @cached_property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dims, self.ggml_type)


@dataclass
class GGUFHeader:
    """The key/values and tensor list of one GGUF file."""

    path: str
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.get(f"{self.get('general.architecture')}.context_length")
        return value if isinstance(value, int) else None

    @property
    def file_type(self) -> str | None:
        """The quantization llama.cpp names it by (``Q4_1``, ``Q4_K_M``, ``F16``), from ``general.file_type``."""
        ftype = self.get("general.file_type")
        if not isinstance(ftype, int):
            return None
        name = FILE_TYPES.get(ftype)
        if name is None:
            try:
                from gguf import LlamaFileType

                name = LlamaFileType(ftype).name
            except (ImportError, ValueError):
                return None
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def type_info(number: int) -> tuple[str, int, int]:
    """(name, elements per block, bytes per block) of ggml type ``number``; ``GGUFError`` if unknown."""
    known = GGML_TYPES.get(number)
    if known is not None:
        return known
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        kind = GGMLQuantizationType(number)
        return (kind.name, *GGML_QUANT_SIZES[kind])
    except (ImportError, ValueError, KeyError):
        raise GGUFError(f"unknown ggml type {number}") from None


def type_number(name: str) -> int | None:
    """The number of the ggml type called ``name`` (``Q8_0``, any case), or None."""
    key = name.upper()
    number = _TYPE_NUMBERS.get(key)
    if number is None:
        try:
            from gguf import GGMLQuantizationType

            number = int(GGMLQuantizationType[key]) if key in GGMLQuantizationType.__members__ else None
        except ImportError:
            return None
    return number


def tensor_nbytes(dims: tuple[int, ...], ggml_type: int) -> int:
    """Bytes of a tensor of ``dims`` elements stored as ``ggml_type``."""
    _, block, size = type_info(ggml_type)
    count = 1
    for d in dims:
        count *= d
    if dims and dims[0] % block:
        raise GGUFError(f"row of {dims[0]} elements is not a multiple of the block size {block}")
    return count // block * size


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse ``path``'s header; cached while the file's size and mtime stay the same."""
    st = os.stat(path)
    return _read_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _read_cached(path: str, size: int, mtime_ns: int) -> GGUFHeader:
    with open(path, "rb") as f:
        if size < 24:
            raise GGUFError(f"{path} is too small to be a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Parser(buf, path).parse()


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """The vocabulary of a GGUF file (``tokenizer.ggml.tokens``), in token id order: a whole pass over the header."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        parser = _Parser(buf, os.fspath(path))
        parser.keep = "tokenizer.ggml.tokens"
        tokens = parser.parse().metadata.get(parser.keep)
    if not isinstance(tokens, list):
        raise GGUFError(f"{path} has no tokenizer.ggml.tokens")
    return tokens


class _Parser:
    def __init__(self, buf: mmap.mmap, path: str):
        self.buf = buf
        self.path = path
        self.pos = 0
        self.order = "<"
        self.keep: str | None = None  # the one long array to decode rather than skip
        self.keeping = False

    def parse(self) -> GGUFHeader:
        (magic,) = struct.unpack_from("<I", self.buf, 0)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path} is not a GGUF file (bad magic)")
        (version,) = struct.unpack_from("<I", self.buf, 4)
        if version & 0xFFFF == 0:  # written on a big-endian machine
            self.order = ">"
            (version,) = struct.unpack_from(">I", self.buf, 4)
        if version < 2:
            raise GGUFError(f"{self.path}: GGUF version {version} is too old (need 2 or later)")
        self.pos = 8
        n_tensors = self.scalar("Q")
        n_kv = self.scalar("Q")
        header = GGUFHeader(path=self.path, version=version)
        for _ in range(n_kv):
            key = self.string()
            self.keeping = key == self.keep
            header.metadata[key] = self.value(self.scalar("I"))
        for _ in range(n_tensors):
            name = self.string()
            n_dims = self.scalar("I")
            dims = tuple(self.scalar("Q") for _ in range(n_dims))
            ggml_type = self.scalar("I")
            self.scalar("Q")  # data offset: not needed
            header.tensors.append(TensorInfo(name, dims, ggml_type))
        return header

    # -------------------------------------------------------------- primitives

    def scalar(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        except struct.error:
            raise GGUFError(f"{self.path}: header ends early (truncated file?)") from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        end = self.pos + length
        if end > len(self.buf):
            raise GGUFError(f"{self.path}: header ends early (truncated file?)")
        data = self.buf[self.pos : end]
        self.pos = end
        return data.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.scalar(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.scalar("I")
            count = self.scalar("Q")
            if count > _KEEP_ARRAY and not self.keeping:
                self.skip_array(item_type, count)
                return ArrayInfo(count)
            return [self.value(item_type) for _ in range(count)]
        raise GGUFError(f"{self.path}: unknown metadata value type {vtype}")

    def skip_array(self, item_type: int, count: int) -> None:
        fmt = _SCALARS.get(item_type)
        if fmt is not None:
            self.pos += struct.calcsize(fmt) * count
        elif item_type == _STRING:
            # A vocabulary is walked on every launch (server and replica): the loop's names are locals.
            unpack, buf, pos = struct.Struct(self.order + "Q").unpack_from, self.buf, self.pos
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
            self.pos = pos
        else:
            for _ in range(count):
                self.value(item_type)
        if self.pos > len(self.buf):
            raise GGUFError(f"{self.path}: header ends early (truncated file?)")


GGUF_MAGIC = 0x46554747  # "GGUF" read as a little-endian uint32 (gguf.GGUF_MAGIC)

# GGUFValueType numbers (gguf.GGUFValueType), spelled out so that parsing a
# value is a dict lookup rather than an enum construction per token.
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

# ggml's types: number -> (name, elements per block, bytes per block), as in ggml.h and gguf's GGML_QUANT_SIZES
# (tests/llamacpp/test_gguf_tables.py checks both tables against the installed gguf package).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
_TYPE_NUMBERS = {name: number for number, (name, _, _) in GGML_TYPES.items()}

# llama.cpp's file types (``general.file_type``): number -> gguf's LlamaFileType name.
FILE_TYPES: dict[int, str] = {
    0: "ALL_F32",
    1: "MOSTLY_F16",
    2: "MOSTLY_Q4_0",
    3: "MOSTLY_Q4_1",
    7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1",
    10: "MOSTLY_Q2_K",
    11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M",
    13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S",
    15: "MOSTLY_Q4_K_M",
    16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M",
    18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS",
    20: "MOSTLY_IQ2_XS",
    21: "MOSTLY_Q2_K_S",
    22: "MOSTLY_IQ3_XS",
    23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S",
    25: "MOSTLY_IQ4_NL",
    26: "MOSTLY_IQ3_S",
    27: "MOSTLY_IQ3_M",
    28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M",
    30: "MOSTLY_IQ4_XS",
    31: "MOSTLY_IQ1_M",
    32: "MOSTLY_BF16",
    36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0",
    38: "MOSTLY_MXFP4_MOE",
    39: "MOSTLY_NVFP4",
    40: "MOSTLY_Q1_0",
}
