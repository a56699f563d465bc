"""GGUF writer for ``tinymodels``: llama architecture, random weights, the shared BPE tokenizer.

The tokenizer goes in as llama.cpp's gpt2-style BPE (byte-level tokens plus
merges) with the ``qwen2`` pre-tokenizer, whose regex is the one the tokenizer
was trained with, and a ChatML chat template in ``tokenizer.chat_template``.
Tensors are written one at a time (header first), so a large model never sits
in memory whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinymodels import VERSION, Shape, random_tensor
from tinymodels_tokenizer import ADDED_TOKENS, CHATML_TEMPLATE, EOS, PAD, token_id, train_tokenizer

FTYPES = ("f16", "q8_0", "f32")


def gguf_tensors(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """llama.cpp tensor names with numpy shapes (rows = output features), in file order."""
    h, d, ff = shape.hidden, shape.dim, shape.intermediate
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (vocab, h))]
    for i in range(shape.layers):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", (h,)),
            (p + "attn_q.weight", (shape.heads * d, h)),
            (p + "attn_k.weight", (shape.kv_heads * d, h)),
            (p + "attn_v.weight", (shape.kv_heads * d, h)),
            (p + "attn_output.weight", (h, shape.heads * d)),
            (p + "ffn_norm.weight", (h,)),
            (p + "ffn_gate.weight", (ff, h)),
            (p + "ffn_up.weight", (ff, h)),
            (p + "ffn_down.weight", (h, ff)),
        ]
    out.append(("output_norm.weight", (h,)))
    if not shape.tie_embeddings:
        out.append(("output.weight", (vocab, h)))
    return out


def write_gguf(
    path: Path, shape: Shape, ftype: str = "f16", seed: int = 0, delta: dict[str, Any] | None = None
) -> Path:
    """Write a llama-architecture GGUF at ``path``; matrices in ``ftype``, norms in F32.

    ``delta`` (tensor name -> float32 array) is added to those random tensors
    before they are stored: a LoRA adapter merged into the weights
    (``tinymodels_lora``).
    """
    import gguf
    import numpy as np

    if ftype not in FTYPES:
        raise ValueError(f"unknown ftype {ftype!r}; choose from {', '.join(FTYPES)}")
    qtype = gguf.GGMLQuantizationType.F16 if ftype == "f16" else gguf.GGMLQuantizationType.Q8_0
    tok = train_tokenizer(shape.vocab_size)
    vocab = tok.get_vocab_size()
    model = json.loads(tok.to_str())["model"]
    tokens = [""] * vocab
    types = [int(gguf.TokenType.NORMAL)] * vocab
    for text, i in model["vocab"].items():
        tokens[i] = text
    for text, special in ADDED_TOKENS:
        i = token_id(tok, text)
        tokens[i] = text
        types[i] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"xinf tinymodels llama {shape.layers}x{shape.hidden}")
    w.add_description(f"random weights, tinymodels v{VERSION} seed {seed}")
    file_types = {"f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "f32": "ALL_F32"}
    w.add_file_type(int(getattr(gguf.LlamaFileType, file_types[ftype])))
    if ftype == "q8_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(vocab)
    w.add_context_length(shape.context)
    w.add_embedding_length(shape.hidden)
    w.add_block_count(shape.layers)
    w.add_feed_forward_length(shape.intermediate)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_key_length(shape.dim)
    w.add_value_length(shape.dim)
    w.add_rope_dimension_count(shape.dim)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(shape.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(token_id(tok, PAD))
    w.add_eos_token_id(token_id(tok, EOS))
    w.add_pad_token_id(token_id(tok, PAD))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    names = gguf_tensors(shape, vocab)
    for name, dims in names:
        if len(dims) == 1 or ftype == "f32":
            w.add_tensor_info(name, dims, np.dtype(np.float32), int(np.prod(dims)) * 4)
        elif ftype == "f16":
            w.add_tensor_info(name, dims, np.dtype(np.float16), int(np.prod(dims)) * 2)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(dims, qtype)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, dims in names:
        data: Any = random_tensor(rng, name, dims)
        if delta and name in delta:
            data = data + delta[name].astype(np.float32)
        if len(dims) > 1 and ftype != "f32":
            data = gguf.quants.quantize(data, qtype)
        w.write_tensor_data(data)
    w.close()
    return path
