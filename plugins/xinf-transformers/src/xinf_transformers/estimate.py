"""Memory a replica needs, from config.json alone (no weights read, no torch).

weights = parameters x dtype size; parameters are counted from the safetensors
headers when the files are there, else derived from the config's shape.
kv_cache = 2 (K and V) x layers x kv_heads x head_dim x dtype size x the
tokens the paged cache holds (max_num_seqs x context_length by default).
overhead = activations of one prefill step (with the attention mask the paged
cache's sdpa path keeps) plus a fixed runtime allowance: the CUDA context on a GPU.
Checked on an H200 (bench/results/gpu-h200-transformers.md): within 3% in total
for a 99M and a 1.24B model at 2 context lengths x 2 batch sizes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from xinf.types import Device, MemoryEstimate, ModelSpec
from xinf_transformers import options as o

MiB = 1 << 20
#: On a GPU: the CUDA context with torch's kernels loaded (756-762 MiB measured on an H200 with torch 2.11 and
#: CUDA 13, whatever the model), cuBLAS workspaces and allocator slack, the tokenizer and Python objects.
CUDA_RUNTIME = 800 * MiB
#: On the CPU: torch, the tokenizer and Python objects (no CUDA context).
CPU_RUNTIME = 512 * MiB


def estimate(spec: ModelSpec, raw: dict[str, Any], devices: list[Device]) -> MemoryEstimate | None:
    config = o.read_config(spec)
    if not config.get("hidden_size"):
        return None
    opts = o.parse(raw)
    dtype = o.choose_dtype(opts.dtype, on_cuda=bool(devices))
    size = o.DTYPES[dtype]
    params = safetensors_params(spec) or count_params(config)
    weights = params * size
    if spec.adapters:
        from xinf_transformers.adapters import parameters

        weights += 4 * sum(parameters(a) for a in spec.adapters)  # peft keeps LoRA weights in float32
    # An embedding model or a reranker runs whole batches through the encoder and keeps no KV cache.
    embedding = spec.model_type in ("embedding", "rerank") or bool({"embed", "rerank"} & set(spec.abilities))
    tokens = 0 if embedding else kv_tokens(spec, opts, config)
    kv = tokens * kv_bytes_per_token(config, size)
    steps = activation_bytes(config, opts.max_batch_tokens, opts.max_num_seqs, tokens, size)
    overhead = steps + (CUDA_RUNTIME if devices else CPU_RUNTIME)
    total = weights + kv + overhead
    note = f"{params / 1e9:.2f}B parameters in {dtype}; " + (
        "no KV cache (an encoder)" if embedding else f"KV cache for {tokens} tokens"
    )
    if devices:
        share = -(-total // len(devices))
        return MemoryEstimate(
            weights=weights, kv_cache=kv, overhead=overhead, per_device=[share] * len(devices), note=note
        )
    return MemoryEstimate(weights=weights, kv_cache=kv, overhead=overhead, host=total, note=note)


def kv_tokens(spec: ModelSpec, opts: o.Options, config: dict[str, Any]) -> int:
    if opts.kv_cache_tokens:
        return opts.kv_cache_tokens
    return opts.max_num_seqs * o.context_length(spec, opts, config)


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def kv_bytes_per_token(config: dict[str, Any], dtype_size: int) -> int:
    layers = int(config["num_hidden_layers"])
    kv_heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    return 2 * layers * kv_heads * head_dim(config) * dtype_size


def count_params(config: dict[str, Any]) -> int:
    """Parameters of a Llama-shaped decoder (Llama, Qwen2/3, Mistral, Gemma...) from its config."""
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hd = head_dim(config)
    vocab = int(config["vocab_size"])
    inter = int(config.get("intermediate_size") or 4 * hidden)
    model_type = config.get("model_type", "")

    q, kv = heads * hd, kv_heads * hd
    attn = hidden * q + 2 * hidden * kv + q * hidden
    # Qwen2 has biases on q, k and v; others say so with attention_bias.
    if model_type == "qwen2" or config.get("attention_bias"):
        attn += q + 2 * kv
    if model_type in ("qwen3", "qwen3_moe"):
        attn += 2 * hd  # q_norm and k_norm
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    if experts > 1:
        expert_inter = int(config.get("moe_intermediate_size") or inter)
        mlp = experts * 3 * hidden * expert_inter + hidden * experts  # experts and router
    else:
        mlp = 3 * hidden * inter  # gate, up, down
    norms = 2 * hidden
    embeddings = vocab * hidden
    head = 0 if config.get("tie_word_embeddings", False) else vocab * hidden
    return embeddings + layers * (attn + mlp + norms) + hidden + head


def activation_bytes(config: dict[str, Any], batch_tokens: int, seqs: int, cache_tokens: int, dtype_size: int) -> int:
    """Peak temporaries of one step of ``batch_tokens`` tokens.

    The widest hidden activations (fp32) per token; fp32 logits only for the
    rows sampled in a step (one per sequence: continuous batching keeps the
    last position of each); and the attention mask that transformers' paged
    cache allocates for the sdpa attention the plugin loads with, batch tokens
    x (cache tokens + batch tokens) in the model's dtype (256 MiB for 262,144
    cache tokens in bf16, measured on a GPU).
    """
    hidden = int(config["hidden_size"])
    inter = int(config.get("intermediate_size") or 4 * hidden)
    vocab = int(config["vocab_size"])
    logits = 4 * vocab * max(1, min(seqs, batch_tokens))
    mask = batch_tokens * (cache_tokens + batch_tokens) * dtype_size
    return batch_tokens * 4 * (2 * inter + 4 * hidden) + logits + mask


def safetensors_params(spec: ModelSpec) -> int | None:
    """Exact parameter count from the safetensors headers (8 + header bytes read per file)."""
    if not spec.source.path:
        return None
    root = Path(spec.source.path)
    files = sorted(root.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= dim
            total += count
    return total or None
