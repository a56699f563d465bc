"""estimate_vram against figures derived by hand for real model shapes (config.json only, no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xinf.errors import LaunchError
from xinf.types import Device, ModelSource, ModelSpec
from xinf_transformers.plugin import estimate_vram

GiB = 1 << 30
MiB = 1 << 20

# config.json of Qwen/Qwen2.5-7B-Instruct (the fields that shape memory).
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# config.json of meta-llama/Llama-3.1-8B-Instruct.
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def spec_for(tmp_path: Path, config: dict[str, Any], **fields: Any) -> ModelSpec:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ModelSpec(name="m", format="pytorch", source=ModelSource(path=str(tmp_path)), **fields)


def gpu(i: int) -> Device:
    return Device(index=i, name="H100", total_memory=80 * GiB, free_memory=80 * GiB)


def test_qwen25_7b(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B)
    est = estimate_vram(spec=spec, options={"dtype": "bfloat16", "max_num_seqs": 16}, devices=[gpu(0)])
    # Parameters: embeddings 152064*3584 + lm_head 152064*3584 + final norm 3584
    # + 28 layers x (q 3584*3584+3584, k and v 2*(3584*512+512), o 3584*3584,
    #   MLP 3*3584*18944, two norms 2*3584) = 7,615,616,512, Qwen's published count.
    assert est.weights == 7_615_616_512 * 2
    # KV: 2 (K, V) x 28 layers x 4 KV heads x 128 head dim x 2 bytes = 57,344 B/token,
    # for 16 sequences x 4096 tokens (the engine's default context cap).
    assert est.kv_cache == 57_344 * 16 * 4096 == int(3.5 * GiB)
    # Overhead: one prefill step of 512 tokens with activations 4*(2*18944 + 4*3584) bytes per token, fp32
    # logits 4*152064 for each of the 16 sequences, the sdpa mask 512 x (65,536 cache + 512) tokens in bf16,
    # plus 800 MiB for the CUDA context (measured on an H200).
    step = 512 * 4 * (2 * 18944 + 4 * 3584) + 16 * 4 * 152064 + 512 * (65_536 + 512) * 2
    assert est.overhead == step + 800 * MiB
    assert est.per_device == [est.total]
    assert 17 * GiB < est.total < 20 * GiB


def test_the_cpu_has_no_cuda_context(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B)
    options = {"dtype": "bfloat16", "max_num_seqs": 16}
    on_gpu = estimate_vram(spec=spec, options=options, devices=[gpu(0)])
    on_cpu = estimate_vram(spec=spec, options=options, devices=[])
    assert on_gpu.overhead - on_cpu.overhead == (800 - 512) * MiB
    assert on_cpu.host == on_cpu.total and on_gpu.host == 0


def test_the_attention_mask_grows_with_the_cache(tmp_path: Path) -> None:
    """transformers' paged cache keeps a batch tokens x cache tokens mask for sdpa: 256 MiB more at 262,144 tokens."""
    spec = spec_for(tmp_path, LLAMA31_8B)
    small = estimate_vram(spec=spec, options={"max_num_seqs": 4, "context_length": 2048}, devices=[gpu(0)])
    big = estimate_vram(spec=spec, options={"max_num_seqs": 32, "context_length": 8192}, devices=[gpu(0)])
    logits = (32 - 4) * 4 * 128256
    assert big.overhead - small.overhead == 512 * (32 * 8192 - 4 * 2048) * 2 + logits


def test_llama31_8b_context_and_seqs(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, LLAMA31_8B)
    est = estimate_vram(
        spec=spec, options={"dtype": "bf16", "max_num_seqs": 4, "context_length": 32768}, devices=[gpu(0), gpu(1)]
    )
    assert est.weights == 8_030_261_248 * 2  # Meta's published parameter count, in bf16
    # 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB per token; 4 x 32768 tokens = 16 GiB.
    assert est.kv_cache == 16 * GiB
    assert len(est.per_device) == 2 and sum(est.per_device) >= est.total


def test_fp32_doubles_weights_and_cache(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, LLAMA31_8B)
    bf16 = estimate_vram(spec=spec, options={"dtype": "bfloat16"}, devices=[])
    fp32 = estimate_vram(spec=spec, options={"dtype": "float32"}, devices=[])
    assert fp32.weights == 2 * bf16.weights and fp32.kv_cache == 2 * bf16.kv_cache
    assert fp32.host == fp32.total and fp32.per_device == []


def test_auto_dtype_is_bf16_on_cuda(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B)
    est = estimate_vram(spec=spec, options={}, devices=[gpu(0)])
    assert est.weights == 7_615_616_512 * 2


def test_kv_cache_tokens_option(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B)
    est = estimate_vram(spec=spec, options={"dtype": "bfloat16", "kv_cache_tokens": 10_000}, devices=[])
    assert est.kv_cache == 57_344 * 10_000


def test_embedding_models_have_no_kv_cache(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B, model_type="embedding", abilities=["embed"])
    est = estimate_vram(spec=spec, options={"dtype": "bfloat16"}, devices=[gpu(0)])
    assert est.kv_cache == 0
    assert "no KV cache" in est.note
    assert est.per_device == [est.weights + est.overhead]


def test_exact_count_from_safetensors_headers(qwen3_path: Path) -> None:
    """With weights present, the parameters are counted from the file headers."""
    config = json.loads((qwen3_path / "config.json").read_text())
    spec = ModelSpec(name="t", format="pytorch", source=ModelSource(path=str(qwen3_path)))
    est = estimate_vram(spec=spec, options={"dtype": "float32"}, devices=[])
    assert est.weights == config["xinf_tinymodels"]["parameters"] * 4


def test_bad_option_names_the_option(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, QWEN25_7B)
    with pytest.raises(LaunchError, match="max_num_seqz"):
        estimate_vram(spec=spec, options={"max_num_seqz": 3}, devices=[])
    with pytest.raises(LaunchError, match="dtype"):
        estimate_vram(spec=spec, options={"dtype": "int3"}, devices=[])


def test_no_config_no_estimate(tmp_path: Path) -> None:
    spec = ModelSpec(name="m", format="pytorch", source=ModelSource(path=str(tmp_path)))
    assert estimate_vram(spec=spec, options={}, devices=[]) is None


def test_a_huge_context_on_cpu_is_a_host_figure_the_placement_refuses(tmp_path: Path) -> None:
    from xinf.placement import Ledger, plan
    from xinf.types import Hardware

    spec = spec_for(tmp_path, QWEN25_7B)
    # float32 whatever the CPU: with "auto", a CPU with AVX512-BF16 gets bf16 and half the bytes
    options = {"context_length": 1_000_000_000, "dtype": "float32"}
    est = estimate_vram(spec=spec, options=options, devices=[])
    assert est.host == est.total > 1 << 40  # the whole replica lives in host memory on the CPU
    machine = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=64 * GiB, memory_available=64 * GiB)
    with pytest.raises(LaunchError, match=r"needs [0-9.]+ TiB of host memory \(RAM\) on this machine"):
        plan(
            uid="m", replicas=1, hardware=machine, ledger=Ledger(), n_gpu=0, gpu_idx=None,
            estimate=lambda devices: estimate_vram(spec=spec, options=options, devices=devices),
        )  # fmt: skip
