"""estimate_vram on real models' shapes (their config.json written to a temp dir), against hand-derived figures.

The figures in the comments are worked out by hand from the published shapes;
the parameter counts agree with the models' cards (Qwen2.5-7B 7.6B, Llama-3.1-70B
70.6B, Mixtral-8x7B 46.7B).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from xinf import placement
from xinf.errors import LaunchError
from xinf.types import Device, Hardware, ModelSource, ModelSpec, Placement
from xinf_vllm.engine import engine_args
from xinf_vllm.memory import CPU_BASE, CUDA_BASE, estimate

GiB = 1 << 30

QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
# attention per layer: q,o 2*3584*3584 = 25,690,112 + k,v 2*3584*512 = 3,670,016 -> 29,360,128
# mlp per layer: 3*3584*18944 = 203,685,888; 28 layers -> 6,525,288,448 in linear layers
# embeddings 2*152064*3584 = 1,089,994,752; norms 28*2*3584 + 3584 = 204,288
# 7,615,487,488 parameters, 2 bytes each (bf16):
QWEN25_7B_WEIGHTS = 15_230_974_976
QWEN25_7B_KV_PER_TOKEN = 2 * 28 * 4 * 128 * 2  # 57,344 bytes

LLAMA31_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "max_position_embeddings": 163840,
    "torch_dtype": "bfloat16",
}


def model_dir(tmp_path: Path, config: dict[str, Any], name: str = "m") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def spec_for(folder: Path, fmt: str = "pytorch", quant: str = "none", **kw: Any) -> ModelSpec:
    return ModelSpec(name="m", format=fmt, quantization=quant, source=ModelSource(path=str(folder)), **kw)


def gpu(total_gib: int, index: int = 0) -> Device:
    return Device(index=index, name=f"GPU {index}", total_memory=total_gib * GiB, free_memory=total_gib * GiB)


def test_qwen25_7b_on_one_h100(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 8192, "max_num_seqs": 16}, [gpu(80)])
    assert est is not None
    assert est.weights == QWEN25_7B_WEIGHTS
    assert est.kv_cache == 7 * GiB  # 57,344 bytes x 8192 tokens x 16 sequences
    # 1 GiB base + fp32 logits 16 x 152064 x 4 + one prefill chunk's gate/up 2048 x 2 x 18944 x 2 bytes
    assert est.overhead == CUDA_BASE + 9_732_096 + 155_189_248
    # vLLM takes 90% of the device whatever the model needs: that share is what placement must find free.
    assert est.per_device == [int(0.9 * 80 * GiB)]
    assert est.note == ""


def test_gpu_memory_utilization_sets_the_share_taken(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 8192, "max_num_seqs": 16, "gpu_memory_utilization": 0.5}, [gpu(80)])
    assert est is not None and est.per_device == [40 * GiB]


def test_a_smaller_gpu_holds_fewer_full_length_sequences(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {}, [gpu(24)])  # max_model_len 32768 from the config, max_num_seqs 256 by default
    assert est is not None
    assert est.kv_cache == QWEN25_7B_KV_PER_TOKEN * 32768 * 256  # 448 GiB: far more than the device
    share = int(0.9 * 24 * GiB)  # 23,192,823,398
    assert est.per_device == [share]
    # overhead 1 GiB + 256 x 152064 x 4 + 155,189,248 = 1,384,644,608; KV pool = share - weights - overhead
    # = 6,577,203,814 bytes = 3 sequences of 32768 tokens (1,879,048,192 bytes each)
    assert "about 3 of max_num_seqs=256 sequences at max_model_len=32768" in est.note


def test_a_gpu_too_small_for_one_sequence_is_refused_by_placement(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {}, [gpu(16)])
    assert est is not None
    # weights 15,230,974,976 + one 32768-token sequence 1,879,048,192 + overhead 1,384,644,608
    minimum = 18_494_667_776
    assert est.per_device == [math.ceil(minimum / 0.9)]  # more than the 16 GiB the device has
    hardware = Hardware(
        system="Linux",
        machine="x86_64",
        cpu_count=8,
        memory_total=64 * GiB,
        memory_available=64 * GiB,
        devices=[gpu(16)],
    )
    with pytest.raises(LaunchError) as info:
        placement.plan(
            uid="qwen",
            replicas=1,
            hardware=hardware,
            ledger=placement.Ledger(),
            estimate=lambda devices: estimate(spec, {}, devices),
            n_gpu=1,
            gpu_idx=None,
        )
    assert "does not fit" in str(info.value)
    assert "lower max_model_len" in str(info.value)


def test_shorter_context_makes_it_fit(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 4096, "max_num_seqs": 8}, [gpu(24)])
    assert est is not None and est.per_device == [int(0.9 * 24 * GiB)]


def test_llama31_70b_over_four_gpus(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, LLAMA31_70B))
    est = estimate(spec, {"max_model_len": 16384, "max_num_seqs": 16}, [gpu(80, i) for i in range(4)])
    assert est is not None
    # per layer: q,o 2*8192*8192 + k,v 2*8192*1024 + mlp 3*8192*28672 = 855,638,016; x80 = 68,451,041,280
    # + embeddings 2*128256*8192 = 2,101,346,304 + norms 80*2*8192 + 8192 = 1,318,912 -> 70,553,706,496 params
    assert est.weights == 141_107_412_992
    assert est.kv_cache == 2 * 80 * 8 * 128 * 2 * 16384 * 16  # 320 KiB per token -> 80 GiB
    # per device: 1 GiB + 16 x 128256 x 4 logits + 2048 x 2 x (28672 / 4) x 2 bytes of gate/up
    assert est.overhead == 4 * (CUDA_BASE + 8_208_384 + 58_720_256)
    assert est.per_device == [int(0.9 * 80 * GiB)] * 4
    assert est.note == ""


def test_mixtral_gptq_int4_from_its_config(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, MIXTRAL_8X7B), fmt="gptq", quant="Int4")
    est = estimate(spec, {"max_model_len": 4096, "max_num_seqs": 8}, [gpu(48)])
    assert est is not None
    # linear per layer: q,o 2*4096*4096 + k,v 2*4096*1024 + 8 experts x 3*4096*14336 + router 4096*8
    # = 1,451,261,952; x32 = 46,440,382,464 at 4 bits = 23,220,191,232 bytes
    # embeddings 2*32000*4096 + norms 32*2*4096 + 4096 = 262,410,240 at 2 bytes = 524,820,480
    assert est.weights == 23_745_011_712
    assert est.kv_cache == 2 * 32 * 8 * 128 * 2 * 4096 * 8


def test_mla_caches_the_latent_only(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, DEEPSEEK_V3), fmt="fp8", quant="fp8", size_in_billions=671)
    est = estimate(spec, {"max_model_len": 4096, "max_num_seqs": 8}, [gpu(141, i) for i in range(8)])
    assert est is not None
    assert est.kv_cache == 61 * (512 + 64) * 2 * 4096 * 8  # 70,272 bytes per token, no separate K and V
    assert est.weights == 671 * 10**9  # from the model size: 8 bits per weight


def test_files_on_disk_decide_the_weights(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, QWEN25_7B)
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 1000)
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 234)
    est = estimate(spec_for(folder), {"max_model_len": 1024}, [gpu(80)])
    assert est is not None and est.weights == 1234


def test_float32_checkpoints_run_in_16_bits_on_gpu(tmp_path: Path) -> None:
    config = {**QWEN25_7B, "torch_dtype": "float32"}
    spec = spec_for(model_dir(tmp_path, config))
    on_gpu = estimate(spec, {"max_model_len": 1024, "max_num_seqs": 1}, [gpu(80)])
    on_cpu = estimate(spec, {"max_model_len": 1024, "max_num_seqs": 1}, [])
    assert on_gpu is not None and on_cpu is not None
    assert on_gpu.weights == QWEN25_7B_WEIGHTS
    assert on_cpu.weights == 2 * QWEN25_7B_WEIGHTS
    assert estimate(spec, {"max_model_len": 1024, "dtype": "float32"}, [gpu(80)]).weights == 2 * QWEN25_7B_WEIGHTS  # type: ignore[union-attr]


def test_fp8_kv_cache_halves_it(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 8192, "max_num_seqs": 16, "kv_cache_dtype": "fp8"}, [gpu(80)])
    assert est is not None and est.kv_cache == 7 * GiB // 2


# ---------------------------------------------------------------- CPU: the estimate is what load asks vLLM for


def test_cpu_estimate_of_the_tiny_model_is_the_kv_cache_load_sets(tmp_path: Path) -> None:
    import tinymodels

    folder = tinymodels.ensure("qwen3-tiny")
    spec = spec_for(folder)
    options = {"max_model_len": 500, "max_num_seqs": 4}
    est = estimate(spec, options, [])
    assert est is not None
    assert est.weights == (folder / "model.safetensors").stat().st_size
    # 2 x 4 layers x 2 KV heads x 64 x 2 bytes = 2048 bytes per token; 500 tokens fill 4 blocks of 128,
    # for each of 4 sequences, plus the one block vLLM's block pool keeps for itself
    assert est.kv_cache == 2048 * (512 * 4 + 128)
    assert est.overhead == CPU_BASE and est.per_device == []
    assert est.host == est.weights + est.kv_cache + CPU_BASE
    args = engine_args(spec, options, Placement(), fields=set(options))
    assert args["kv_cache_memory_bytes"] == est.kv_cache
    assert args["max_model_len"] == 500 and args["max_num_seqs"] == 4


def test_cpu_kv_cache_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    est = estimate(spec_for(model_dir(tmp_path, QWEN25_7B)), {"max_model_len": 1024}, [])
    assert est is not None and est.kv_cache == GiB


def test_cannot_estimate_without_config(tmp_path: Path) -> None:
    assert estimate(spec_for(tmp_path), {}, [gpu(80)]) is None


def test_invalid_sizes_are_launch_errors(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    with pytest.raises(LaunchError, match="gpu_memory_utilization must be in"):
        estimate(spec, {"gpu_memory_utilization": 1.5}, [gpu(80)])
    with pytest.raises(LaunchError, match="invalid vLLM option"):
        estimate(spec, {"max_num_seqs": "many"}, [gpu(80)])


def test_the_cpu_build_runs_on_the_cpu_even_with_devices(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    options = {"max_model_len": 1024, "max_num_seqs": 2}
    est = estimate(spec, options, [gpu(80), gpu(80, 1)], gpu_build=False)
    assert est is not None
    assert est.per_device == [0, 0]  # nothing on the (simulated) GPUs
    assert est.kv_cache == QWEN25_7B_KV_PER_TOKEN * (1024 * 2 + 128)  # + vLLM's null block
    assert est.host == QWEN25_7B_WEIGHTS + est.kv_cache + CPU_BASE
    args = engine_args(spec, options, Placement(devices=[0, 1]), fields=set(options), gpu_build=False)
    assert args["tensor_parallel_size"] == 1 and args["kv_cache_memory_bytes"] == est.kv_cache


def test_a_fixed_kv_cache_size_replaces_the_share(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 8192, "max_num_seqs": 16, "kv_cache_memory_bytes": 4 * GiB}, [gpu(80)])
    assert est is not None
    assert est.kv_cache == 4 * GiB
    assert est.per_device == [QWEN25_7B_WEIGHTS + 4 * GiB + CUDA_BASE + 9_732_096 + 155_189_248]


def test_a_huge_context_on_the_cpu_build_is_a_host_figure(tmp_path: Path) -> None:
    spec = spec_for(model_dir(tmp_path, QWEN25_7B))
    est = estimate(spec, {"max_model_len": 1_000_000_000}, [], gpu_build=False)
    assert est is not None and est.host == est.weights + est.kv_cache + est.overhead > 1 << 40
