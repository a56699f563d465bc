"""A tiny random-weight multimodal projector (``mmproj``) GGUF for llama.cpp, built offline.

llama.cpp reads images through a projector file beside the language model: a
CLIP vision tower and the LLaVA MLP projector (``clip.projector_type`` "mlp")
whose output width is the language model's hidden size.  This writes one with
the ``gguf`` package and numpy: a 2-layer CLIP ViT at 56x56 pixels in 14-pixel
patches (16 image tokens; llama.cpp runs the layers before the last, as LLaVA
uses the second-to-last layer's features), projecting to ``text_hidden``
(256: ``tinymodels.ensure("gguf-tiny")``).  The tensor and key names are those
llama.cpp's ``tools/mtmd`` loader reads for LLaVA-style projectors.

    import tinymodels_mmproj
    mmproj = tinymodels_mmproj.ensure()               # for gguf-tiny
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tinymodels_cache import cache_dir

VERSION = 1
IMAGE_SIZE = 56
PATCH = 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2
# CLIP's normalisation, as LLaVA's processors use it
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def tensors(embd: int, ff: int, layers: int, text_hidden: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and numpy shapes (rows = output features)."""
    positions = TOKENS_PER_IMAGE + 1  # the class token's too
    out: list[tuple[str, tuple[int, ...]]] = [
        ("v.patch_embd.weight", (embd, 3, PATCH, PATCH)),
        ("v.class_embd", (embd,)),
        ("v.position_embd.weight", (positions, embd)),
        ("v.pre_ln.weight", (embd,)),
        ("v.pre_ln.bias", (embd,)),
    ]
    for i in range(layers):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out += [(p + name + ".weight", (embd, embd)), (p + name + ".bias", (embd,))]
        out += [
            (p + "ln1.weight", (embd,)),
            (p + "ln1.bias", (embd,)),
            (p + "ln2.weight", (embd,)),
            (p + "ln2.bias", (embd,)),
            (p + "ffn_up.weight", (ff, embd)),
            (p + "ffn_up.bias", (ff,)),
            (p + "ffn_down.weight", (embd, ff)),
            (p + "ffn_down.bias", (embd,)),
        ]
    out += [
        ("mm.0.weight", (text_hidden, embd)),
        ("mm.0.bias", (text_hidden,)),
        ("mm.2.weight", (text_hidden, text_hidden)),
        ("mm.2.bias", (text_hidden,)),
    ]
    return out


def write_mmproj(path: Path, text_hidden: int = 256, seed: int = 0, embd: int = 64, layers: int = 2) -> Path:
    import gguf
    import numpy as np

    ff = embd * 2
    w = gguf.GGUFWriter(path, "clip")
    w.add_name("xinf tiny LLaVA projector")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", False)  # CLIP's quick GELU
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", embd)
    w.add_uint32("clip.vision.feed_forward_length", ff)
    w.add_uint32("clip.vision.block_count", layers)
    w.add_uint32("clip.vision.projection_dim", text_hidden)
    w.add_uint32("clip.vision.attention.head_count", 2)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", MEAN)
    w.add_array("clip.vision.image_std", STD)
    w.add_file_type(1)  # mostly F16
    rng = np.random.default_rng(seed)
    for name, dims in tensors(embd, ff, layers, text_hidden):
        data: Any
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name.endswith("pre_ln.weight"):
            data = np.ones(dims, dtype=np.float32)
        elif name.endswith(".bias"):
            data = np.zeros(dims, dtype=np.float32)
        else:
            data = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
        if len(dims) >= 2:  # matrices and the patch convolution in F16 (ggml's convolution wants F16 kernels)
            data = data.astype(np.float16)
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def ensure(text_hidden: int = 256, seed: int = 0) -> Path:
    """The cached projector file (built now if missing)."""
    described = {"version": VERSION, "text_hidden": text_hidden, "seed": seed}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"mmproj-tiny-{key}.gguf"
    if final.exists():
        return final
    fd, tmp = tempfile.mkstemp(prefix=".mmproj-", suffix=".gguf", dir=root)
    os.close(fd)
    try:
        write_mmproj(Path(tmp), text_hidden, seed)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


if __name__ == "__main__":
    print(ensure())
