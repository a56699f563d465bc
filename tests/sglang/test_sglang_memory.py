"""SGLang's memory estimate against figures derived by hand from SGLang's own sizing rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xinf.plugins import PluginHost
from xinf.types import Device, ModelSource, ModelSpec

GiB = 1 << 30
MiB = 1 << 20
LLAMA3_8B = dict(
    architectures=["LlamaForCausalLM"],
    num_hidden_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    torch_dtype="bfloat16",
)
QWEN25_7B = dict(
    architectures=["Qwen2ForCausalLM"],
    num_hidden_layers=28,
    hidden_size=3584,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    torch_dtype="bfloat16",
)


def gpu(index: int, total: int) -> Device:
    return Device(index=index, name="GPU", total_memory=total, free_memory=total)


def model(tmp_path: Path, weights: int, config: dict[str, Any]) -> ModelSpec:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "model.safetensors", "wb") as f:
        f.truncate(weights)  # sparse: only the size matters
    return ModelSpec(
        name=tmp_path.name, format="pytorch", family="llama-3.1-instruct", source=ModelSource(path=str(tmp_path))
    )


@pytest.fixture(scope="module")
def estimate() -> Any:
    return PluginHost.discover(only=["sglang"]).hook("sglang", "estimate_vram")


def test_default_fraction_on_an_h100_takes_the_whole_device(estimate: Any, tmp_path: Path) -> None:
    spec = model(tmp_path / "llama3-8b", 16_060_522_496, LLAMA3_8B)
    got = estimate(spec=spec, options={}, devices=[gpu(0, 80 * GiB)])
    # 80 GiB -> chunked prefill 8192, decode graphs up to 256: reserve 512 + 8192 x 1.5 + 1/8 x 1024 + 256 x 2
    # = 13440 MiB; mem_fraction_static = round((81920 - 13440) / 81920, 3) = 0.836
    static = int(0.836 * 80 * GiB)
    assert static == 71_811_853_189
    assert got.weights == 16_060_522_496
    assert got.kv_cache == static - 16_060_522_496 == 55_751_330_693  # the pool fills the static part
    assert got.overhead == 80 * GiB - static  # the 13440 MiB reserve, capped by what the fraction leaves
    assert got.per_device == [80 * GiB]
    # 128 KiB a token (2 x 32 layers x 8 heads x 128 dims x 2 bytes): the pool holds 51 full 8192-token sequences
    assert "51 full 8192-token sequences" in got.note


def test_explicit_fraction_that_cannot_hold_the_weights(estimate: Any, tmp_path: Path) -> None:
    spec = model(tmp_path / "qwen2.5-7b", 15_231_233_024, QWEN25_7B)
    got = estimate(spec=spec, options={"mem_fraction_static": 0.5}, devices=[gpu(0, 24 * GiB)])
    # half of 24 GiB is less than the 14.2 GiB of weights
    assert "does not fit" in got.note and "(12.00 GiB)" in got.note
    # one 32768-token sequence: 2 x 28 layers x 4 heads x 128 dims x 2 bytes x 32768 = 1.75 GiB
    assert got.kv_cache == 1_879_048_192
    # 24 GiB -> chunked prefill 4096, decode graphs 48: reserve 512 + 6144 + 128 + 96 = 6880 MiB
    assert got.overhead == 6880 * MiB
    assert got.per_device == [15_231_233_024 + 1_879_048_192 + 6880 * MiB]


def test_two_gpus_with_an_fp8_cache(estimate: Any, tmp_path: Path) -> None:
    spec = model(tmp_path / "qwen2.5-7b", 15_231_233_024, QWEN25_7B)
    options = {"mem_fraction_static": 0.85, "kv_cache_dtype": "fp8_e5m2", "tensor_parallel_size": 2}
    got = estimate(spec=spec, options=options, devices=[gpu(0, 24 * GiB), gpu(1, 24 * GiB)])
    static = int(0.85 * 24 * GiB)
    assert got.kv_cache == 2 * static - 15_231_233_024
    assert got.per_device == [24 * GiB, 24 * GiB]  # SGLang's 7008 MiB reserve exceeds what 0.85 leaves
    # fp8: one byte per value, so a 32768-token sequence takes 0.875 GiB
    assert f"{got.kv_cache // 939_524_096} full 32768-token sequences" in got.note


def test_without_a_gpu_it_gives_the_least_a_device_must_hold(estimate: Any, tmp_path: Path) -> None:
    spec = model(tmp_path / "llama3-8b", 16_060_522_496, LLAMA3_8B)
    got = estimate(spec=spec, options={"context_length": 8192}, devices=[])
    assert got.kv_cache == GiB  # 128 KiB x 8192 tokens
    assert got.overhead == (512 + 2048 * 1.5 + 128 + 8 * 2) * MiB  # the smallest device class's reserve
    assert got.per_device == [] and "no CUDA device" in got.note


def test_no_estimate_without_local_files(estimate: Any) -> None:
    assert estimate(spec=ModelSpec(name="m", format="pytorch"), options={}, devices=[gpu(0, 80 * GiB)]) is None
