"""LoRA adapters for the tiny test models, built offline and deterministically.

- ``peft_adapter("qwen3-tiny")``: a PEFT adapter directory (``adapter_config.json``
  and ``adapter_model.safetensors``) for the Hugging Face tiny model of that
  name, as ``peft`` saves one; transformers/peft and vLLM load it.
- ``gguf_adapter()``: a llama.cpp LoRA adapter file for ``gguf-tiny`` (as
  llama.cpp's ``convert_lora_to_gguf.py`` writes them: ``general.type =
  adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, tensors
  ``<base tensor>.lora_a`` of shape (r, n_in) and ``.lora_b`` of (n_out, r)).
- ``gguf_merged()``: ``gguf-tiny`` with that adapter merged into its weights
  (``W + scale * alpha / r * B @ A``), the reference the tests compare with.

The GGUF files are F32 (``ftype="f32"``) so that the adapter applied at run
time and the merged weights agree to float rounding: greedy outputs match.
The adapters' weights are large next to the base's (random N(0, 0.02)), so
they change what the model writes.  Outputs are cached beside tinymodels'
(``<repo>/.cache/models/``, git-ignored), keyed by every parameter.

From the shell: ``python tools/tinymodels_lora.py gguf`` or ``... peft qwen3-tiny``.
"""

from __future__ import annotations

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

import tinymodels

VERSION = 1
#: Hugging Face module name -> llama.cpp tensor name in each block
GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
TARGETS = ("q_proj", "v_proj", "down_proj")
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}


def _dims(shape: tinymodels.Shape, module: str) -> tuple[int, int]:
    """(n_out, n_in) of one adapted matrix."""
    h, d, ff = shape.hidden, shape.dim, shape.intermediate
    return {
        "q_proj": (shape.heads * d, h),
        "k_proj": (shape.kv_heads * d, h),
        "v_proj": (shape.kv_heads * d, h),
        "o_proj": (h, shape.heads * d),
        "gate_proj": (ff, h),
        "up_proj": (ff, h),
        "down_proj": (h, ff),
    }[module]


def lora_weights(shape: tinymodels.Shape, rank: int, targets: tuple[str, ...], seed: int) -> dict[tuple[int, str], Any]:
    """(layer, module) -> (A, B): A of shape (rank, n_in), B of shape (n_out, rank), float32."""
    import numpy as np

    rng = np.random.default_rng(10_000 + seed)
    out = {}
    for layer in range(shape.layers):
        for module in targets:
            n_out, n_in = _dims(shape, module)
            a = rng.standard_normal((rank, n_in), dtype=np.float32) * np.float32(0.1)
            b = rng.standard_normal((n_out, rank), dtype=np.float32) * np.float32(0.1)
            out[(layer, module)] = (a, b)
    return out


# ------------------------------------------------------------------------------------------ GGUF


def gguf_adapter(
    *, rank: int = 4, alpha: float = 8.0, targets: tuple[str, ...] = TARGETS, seed: int = 1, **shape: Any
) -> Path:
    """A llama.cpp LoRA adapter for ``tinymodels.ensure("gguf-tiny", **shape)``."""
    params = {"rank": rank, "alpha": alpha, "targets": list(targets), "seed": seed, "shape": shape}
    return _cached(
        "gguf-lora", params, ".gguf", lambda path: _write_gguf_adapter(path, rank, alpha, targets, seed, shape)
    )


def _write_gguf_adapter(
    path: Path, rank: int, alpha: float, targets: tuple[str, ...], seed: int, shape: dict[str, Any]
) -> None:
    import gguf

    s = _shape(shape)
    w = gguf.GGUFWriter(path, "llama")  # general.architecture: the base's
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    for (layer, module), (a, b) in lora_weights(s, rank, targets, seed).items():
        base = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
        w.add_tensor(base + ".lora_a", a)  # numpy (r, n_in): ggml dims [n_in, r]
        w.add_tensor(base + ".lora_b", b)  # numpy (n_out, r): ggml dims [r, n_out]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_base(**shape: Any) -> Path:
    """The F32 ``gguf-tiny`` model the adapters are made for."""
    return tinymodels.ensure("gguf-tiny", ftype="f32", **shape)


def gguf_merged(
    *,
    scale: float = 1.0,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = TARGETS,
    seed: int = 1,
    **shape: Any,
) -> Path:
    """``gguf_base(**shape)`` with ``gguf_adapter(...)`` at ``scale`` merged into its weights."""
    params = {"scale": scale, "rank": rank, "alpha": alpha, "targets": list(targets), "seed": seed, "shape": shape}

    def write(path: Path) -> None:
        from tinymodels_gguf import write_gguf

        s = _shape(shape)
        factor = scale * alpha / rank
        delta = {
            f"blk.{layer}.{GGUF_NAMES[module]}.weight": factor * (b @ a)
            for (layer, module), (a, b) in lora_weights(s, rank, targets, seed).items()
        }
        write_gguf(path, s, ftype="f32", seed=0, delta=delta)

    return _cached("gguf-merged", params, ".gguf", write)


# ------------------------------------------------------------------------------------------ PEFT


def peft_adapter(
    model: str = "qwen3-tiny",
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = TARGETS,
    seed: int = 1,
    **shape: Any,
) -> Path:
    """A PEFT LoRA adapter directory for ``tinymodels.ensure(model, **shape)``."""
    params = {"model": model, "rank": rank, "alpha": alpha, "targets": list(targets), "seed": seed, "shape": shape}

    def write(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        s = _shape(shape, model.partition("-")[2])
        tensors = {}
        for (layer, module), (a, b) in lora_weights(s, rank, targets, seed).items():
            prefix = f"base_model.model.model.layers.{layer}.{_PARENT.get(module, 'mlp')}.{module}"
            tensors[prefix + ".lora_A.weight"] = a
            tensors[prefix + ".lora_B.weight"] = b
        _write_safetensors(path / "adapter_model.safetensors", tensors)
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": model,
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": 0.0,
            "target_modules": sorted(targets),
            "bias": "none",
            "fan_in_fan_out": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "modules_to_save": None,
            "use_rslora": False,
            "use_dora": False,
        }
        (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    return _cached("peft-lora", params, "", write)


def hf_merged(
    model: str = "qwen3-tiny",
    *,
    scale: float = 1.0,
    rank: int = 4,
    alpha: float = 8.0,
    targets: tuple[str, ...] = TARGETS,
    seed: int = 1,
    **shape: Any,
) -> Path:
    """``tinymodels.ensure(model, **shape)`` with ``peft_adapter(...)`` merged into its weights, as float32.

    Numpy only (for environments without peft, such as vLLM's): the base's
    weights widened to float32 plus ``scale * alpha / r * B @ A``.
    """
    params = {"model": model, "scale": scale, "rank": rank, "alpha": alpha, "targets": list(targets), "seed": seed}
    params["shape"] = shape

    def write(path: Path) -> None:
        import numpy as np

        base = tinymodels.ensure(model, **shape)
        shutil.copytree(base, path)
        (path / "model.safetensors").unlink()
        tensors = _read_safetensors(base / "model.safetensors")
        factor = np.float32(scale * alpha / rank)
        s = _shape(shape, model.partition("-")[2])
        for (layer, module), (a, b) in lora_weights(s, rank, targets, seed).items():
            name = f"model.layers.{layer}.{_PARENT.get(module, 'mlp')}.{module}.weight"
            tensors[name] = tensors[name] + factor * (b @ a)
        _write_safetensors(path / "model.safetensors", tensors)
        config = json.loads((path / "config.json").read_text())
        config["torch_dtype"] = "float32"
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    return _cached("hf-merged", params, "", write)


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Every tensor of a safetensors file as float32 numpy arrays (BF16, F16 and F32 files)."""
    import numpy as np

    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    start = 8 + length
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        data = raw[start + begin : start + end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            array = np.frombuffer(data, dtype="<f2").astype(np.float32)
        else:
            array = np.frombuffer(data, dtype="<f4").copy()
        out[name] = array.reshape(info["shape"])
    return out


def _write_safetensors(path: Path, tensors: dict[str, Any]) -> None:
    """float32 tensors as safetensors, with numpy only."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for array in tensors.values():
            f.write(array.astype("<f4").tobytes())


# ------------------------------------------------------------------------------------------ cache


def _shape(overrides: dict[str, Any], preset: str = "tiny") -> tinymodels.Shape:
    return dataclasses.replace(tinymodels.PRESETS[preset], **overrides)


def _cached(kind: str, params: dict[str, Any], suffix: str, write: Any) -> Path:
    params = {**params, "version": VERSION, "tinymodels": tinymodels.VERSION}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = tinymodels.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{kind}-{key}{suffix}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        target = tmp / f"out{suffix}"
        write(target)
        if target.is_dir():
            target.chmod(0o755)
        try:
            os.rename(target, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("gguf", "merged", "peft"):
        print("usage: tinymodels_lora.py gguf | merged [SCALE] | peft [MODEL]", file=sys.stderr)
        return 2
    if argv[0] == "gguf":
        print(gguf_adapter())
    elif argv[0] == "merged":
        print(gguf_merged(scale=float(argv[1]) if len(argv) > 1 else 1.0))
    else:
        print(peft_adapter(argv[1] if len(argv) > 1 else "qwen3-tiny"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
