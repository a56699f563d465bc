"""Small random-weight models that real engines load, built offline and deterministically.

Every model shares one byte-level BPE tokenizer trained with ``tokenizers`` on
``tinymodels_corpus.txt`` (a few KB of English kept in the repo), with ChatML
special tokens and ``<think>``/``</think>``.  The weights are random (seeded):
the text these models write is gibberish, so tests never assert on it.

- Hugging Face directories (``config.json``, ``generation_config.json``,
  ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` with a
  chat template) for the ``llama``, ``qwen2`` and ``qwen3`` architectures; the
  qwen3 one carries a Qwen3-style template that honours ``enable_thinking``.
- GGUF files (llama architecture, the same tokenizer as gpt2-style BPE, a
  ChatML template), F16 or Q8_0 (see ``tinymodels_gguf``).
- Embedding models (``embed-<preset>``): a qwen3 directory plus the
  sentence-transformers files (last-token pooling, normalized), as
  Qwen3-Embedding ships them.

The tokenizer and the chat templates live in ``tinymodels_tokenizer``.

Use from tests::

    import tinymodels
    path = tinymodels.ensure("qwen3-tiny")             # an HF directory
    gguf = tinymodels.ensure("gguf-tiny")              # a .gguf file
    embed = tinymodels.ensure("embed-tiny")            # an embedding model directory
    big = tinymodels.ensure("llama-100m", layers=6)    # preset with shape overrides

or from the shell: ``python tools/tinymodels.py qwen3-tiny --layers 2``.
Models are cached under ``<repo>/.cache/models/`` (``XINF_MODELS_CACHE``
overrides), keyed by every generator parameter and ``VERSION``; a build goes
to a temporary name and is renamed into place, so concurrent callers are safe.
Only numpy, ``tokenizers`` (and ``gguf`` for GGUF files) are needed: no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from tinymodels_tokenizer import (
    ADDED_TOKENS,
    CHATML_TEMPLATE,
    CORPUS,
    EOS,
    PAD,
    QWEN3_TEMPLATE,
    token_id,
    train_tokenizer,
)

#: bump when the output of a generator changes, so cached models are rebuilt
VERSION = 1
ARCHS = ("llama", "qwen2", "qwen3")
REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's shape.  ``vocab_size`` None means the tokenizer's own size."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    head_dim: int | None = None
    vocab_size: int | None = None
    context: int = 4096
    tie_embeddings: bool = False
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads


PRESETS = {
    # ~3M parameters: loads and generates in well under a second everywhere.
    "tiny": Shape(layers=4, hidden=256, heads=4, kv_heads=2, intermediate=512),
    # ~99M parameters (12 x 8.1M per layer + embeddings): benchmarks.
    "100m": Shape(layers=12, hidden=768, heads=12, kv_heads=4, intermediate=2816),
    # ~138M parameters: about 150 MB as a Q8_0 GGUF (the llama.cpp benchmark).
    "150mb": Shape(layers=12, hidden=1024, heads=16, kv_heads=4, intermediate=2816),
    # Llama-3.2-1B's shape (1.24B parameters, 128k vocabulary, tied embeddings): the GPU checks.
    "1b": Shape(
        layers=16,
        hidden=2048,
        heads=32,
        kv_heads=8,
        intermediate=8192,
        head_dim=64,
        vocab_size=128256,
        context=131072,
        tie_embeddings=True,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    # Llama-3.2-3B's shape (3.21B parameters): the llama.cpp GPU check's partial offload.
    "3b": Shape(
        layers=28,
        hidden=3072,
        heads=24,
        kv_heads=8,
        intermediate=8192,
        head_dim=128,
        vocab_size=128256,
        context=131072,
        tie_embeddings=True,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
}


# ------------------------------------------------------------------------------------------ weights


def tensor_shapes(arch: str, shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Hugging Face tensor names and shapes, in the order they are generated."""
    h, d = shape.hidden, shape.dim
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (shape.heads * d, h)),
            (p + "self_attn.k_proj.weight", (shape.kv_heads * d, h)),
            (p + "self_attn.v_proj.weight", (shape.kv_heads * d, h)),
            (p + "self_attn.o_proj.weight", (h, shape.heads * d)),
        ]
        if arch == "qwen2":  # Qwen2 has q/k/v biases
            out += [
                (p + "self_attn.q_proj.bias", (shape.heads * d,)),
                (p + "self_attn.k_proj.bias", (shape.kv_heads * d,)),
                (p + "self_attn.v_proj.bias", (shape.kv_heads * d,)),
            ]
        if arch == "qwen3":  # Qwen3 normalises q and k per head
            out += [(p + "self_attn.q_norm.weight", (d,)), (p + "self_attn.k_norm.weight", (d,))]
        out += [
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (shape.intermediate, h)),
            (p + "mlp.up_proj.weight", (shape.intermediate, h)),
            (p + "mlp.down_proj.weight", (h, shape.intermediate)),
        ]
    out.append(("model.norm.weight", (h,)))
    if not shape.tie_embeddings:
        out.append(("lm_head.weight", (vocab, h)))
    return out


def random_tensor(rng: Any, name: str, dims: tuple[int, ...]) -> Any:
    """Norm weights are ones, biases zeros, the rest N(0, 0.02) like a fresh init."""
    import numpy as np

    if name.endswith("norm.weight"):
        return np.ones(dims, dtype=np.float32)
    if name.endswith(".bias"):
        return np.zeros(dims, dtype=np.float32)
    return rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)


def to_bf16_bits(array: Any) -> Any:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    import numpy as np

    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def write_safetensors(path: Path, arch: str, shape: Shape, vocab: int, dtype: str, seed: int) -> int:
    """Write random weights as safetensors with numpy only; return the parameter count."""
    import numpy as np

    names = tensor_shapes(arch, shape, vocab)
    itemsize = 4 if dtype == "float32" else 2
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dims in names:
        size = int(np.prod(dims)) * itemsize
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(dims),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data must start 8-byte aligned
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, dims in names:
            data = random_tensor(rng, name, dims)
            if dtype == "bfloat16":
                data = to_bf16_bits(data)
            elif dtype == "float16":
                data = data.astype(np.float16)
            f.write(data.tobytes())
    return sum(int(np.prod(d)) for _, d in names)


# ------------------------------------------------------------------------------------------ HF directory


ARCH_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def write_hf(path: Path, arch: str, shape: Shape, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Write a Hugging Face model directory at ``path`` (created)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(SAFETENSORS_DTYPES)}")
    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(shape.vocab_size)
    vocab = tok.get_vocab_size()
    eos, pad = token_id(tok, EOS), token_id(tok, PAD)
    params = write_safetensors(path / "model.safetensors", arch, shape, vocab, dtype, seed)
    config: dict[str, Any] = {
        "architectures": [ARCH_CLASSES[arch]],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.context,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "tie_word_embeddings": shape.tie_embeddings,
        "bos_token_id": pad,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": dtype,
        "use_cache": True,
    }
    if arch in ("llama", "qwen3"):
        config["attention_bias"] = False
    if arch in ("qwen2", "qwen3"):
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=shape.layers)
    config["xinf_tinymodels"] = {"version": VERSION, "seed": seed, "parameters": params}
    generation = {"bos_token_id": pad, "eos_token_id": [eos, pad], "pad_token_id": pad}
    # transformers 5 rebuilds qwen tokenizers through Qwen2Tokenizer; llama's own class would force
    # a sentencepiece-style pipeline, so llama declares the generic fast tokenizer (as Llama 3 does).
    tokenizer_class = "Qwen2Tokenizer" if arch.startswith("qwen") else "PreTrainedTokenizerFast"
    tokenizer_config = {
        "tokenizer_class": tokenizer_class,
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "model_max_length": shape.context,
        "added_tokens_decoder": {
            str(token_id(tok, t)): {
                "content": t,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": s,
            }
            for t, s in ADDED_TOKENS
        },
        "chat_template": QWEN3_TEMPLATE if arch == "qwen3" else CHATML_TEMPLATE,
    }
    tok.save(str(path / "tokenizer.json"))
    for name, data in (
        ("config.json", config),
        ("generation_config.json", generation),
        ("tokenizer_config.json", tokenizer_config),
    ):
        (path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_embedding(path: Path, shape: Shape, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A qwen3 directory that sentence-transformers (and xinf) load as an embedding model."""
    write_hf(path, "qwen3", shape, dtype=dtype, seed=seed)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {"word_embedding_dimension": shape.hidden, "pooling_mode_lasttoken": True, "include_prompt": True}
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "2_Normalize").mkdir(exist_ok=True)
    for name, data in (
        ("modules.json", modules),
        ("1_Pooling/config.json", pooling),
        ("sentence_bert_config.json", {"max_seq_length": min(shape.context, 8192), "do_lower_case": False}),
    ):
        (path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ cache


def cache_dir() -> Path:
    return Path(os.environ.get("XINF_MODELS_CACHE") or REPO / ".cache" / "models")


def parse_name(name: str, **overrides: Any) -> dict[str, Any]:
    """``<arch>-<preset>`` (an HF directory), ``gguf-<preset>`` (a .gguf file) or ``embed-<preset>``."""
    kind, _, preset = name.partition("-")
    if kind not in (*ARCHS, "gguf", "embed") or preset not in PRESETS:
        raise ValueError(
            f"unknown model {name!r}: use <arch>-<preset>, gguf-<preset> or embed-<preset>, "
            f"arch in {', '.join(ARCHS)}, preset in {', '.join(PRESETS)}"
        )
    fields = {f.name for f in dataclasses.fields(Shape)}
    unknown = set(overrides) - fields - {"dtype", "ftype", "seed"}
    if unknown:
        raise ValueError(f"unknown parameters: {', '.join(sorted(unknown))}")
    shape = dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if k in fields})
    build: dict[str, Any] = {"kind": kind, "shape": shape, "seed": int(overrides.get("seed", 0))}
    if kind == "gguf":
        build["ftype"] = overrides.get("ftype") or ("q8_0" if preset == "150mb" else "f16")
    else:
        build["dtype"] = overrides.get("dtype") or "bfloat16"
    return build


def build_key(build: dict[str, Any]) -> str:
    described = {k: dataclasses.asdict(v) if isinstance(v, Shape) else v for k, v in build.items()}
    described["version"] = VERSION
    described["corpus"] = hashlib.sha256(CORPUS.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def ensure(name: str, **overrides: Any) -> Path:
    """Return the cached model ``name`` (built now if missing) with shape ``overrides``."""
    build = parse_name(name, **overrides)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gguf" if build["kind"] == "gguf" else ""
    final = root / f"{name}-{build_key(build)}{suffix}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        if build["kind"] == "gguf":
            from tinymodels_gguf import write_gguf

            write_gguf(tmp / "model.gguf", build["shape"], ftype=build["ftype"], seed=build["seed"])
            os.replace(tmp / "model.gguf", final)  # atomic; a concurrent winner is simply overwritten
        else:
            write_dir(tmp, build)
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # not a lost race: a real error
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_dir(path: Path, build: dict[str, Any]) -> Path:
    """An HF directory (or an embedding model's) for ``build`` (from ``parse_name``)."""
    if build["kind"] == "embed":
        return write_embedding(path, build["shape"], dtype=build["dtype"], seed=build["seed"])
    return write_hf(path, build["kind"], build["shape"], dtype=build["dtype"], seed=build["seed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or find cached) tiny random-weight test models.")
    parser.add_argument("name", help="<arch>-<preset>, gguf-<preset> or embed-<preset>, e.g. qwen3-tiny, gguf-1b")
    parser.add_argument("--out", type=Path, help="write here instead of the cache")
    for field in dataclasses.fields(Shape):
        kind = {"bool": lambda v: v.lower() in ("1", "true", "yes"), "float": float}.get(str(field.type), int)
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=kind)
    parser.add_argument("--dtype", choices=list(SAFETENSORS_DTYPES))
    parser.add_argument("--ftype", choices=["f16", "q8_0", "f32"])
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("name", "out") and v is not None}
    if args.out is None:
        print(ensure(args.name, **overrides))
        return 0
    build = parse_name(args.name, **overrides)
    if build["kind"] == "gguf":
        from tinymodels_gguf import write_gguf

        write_gguf(args.out, build["shape"], ftype=build["ftype"], seed=build["seed"])
    else:
        write_dir(args.out, build)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
