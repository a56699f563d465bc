"""Which models the sglang engine takes, and the reason it gives for each refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import tinymodels

from xinf.plugins import PluginHost
from xinf.types import Device, EngineMatch, Hardware, ModelSource, ModelSpec
from xinf_sglang.plugin import installed

GiB = 1 << 30
H100 = Device(index=0, name="NVIDIA H100 80GB HBM3", total_memory=80 * GiB, free_memory=79 * GiB)
CUDA = Hardware(
    system="Linux", machine="x86_64", cpu_count=16, memory_total=128 * GiB, memory_available=120 * GiB, devices=[H100]
)
CPU_ONLY = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=24 * GiB, memory_available=20 * GiB)
MAC = Hardware(system="Darwin", machine="arm64", cpu_count=8, memory_total=32 * GiB, memory_available=30 * GiB)
INSTALLED = installed()
NOT_INSTALLED = "sglang is not installed here: pip install sglang, in an environment of its own"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost.discover(only=["sglang"])


def answer(host: PluginHost, spec: ModelSpec, hardware: Hardware = CUDA) -> EngineMatch:
    return {m.engine: m for m in host.match(spec, hardware)}["sglang"]


def passes_model_rules(match: EngineMatch) -> bool:
    """Every rule about the model and the machine passed; only the install check is left."""
    return match.ok if INSTALLED else match.reason == NOT_INSTALLED


def spec(fmt: str = "pytorch", quantization: str = "none", family: str = "qwen2.5-instruct", **kw: object) -> ModelSpec:
    return ModelSpec(name="m", format=fmt, quantization=quantization, family=family, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "quantization"),
    [
        ("pytorch", "none"),
        ("gptq", "Int3"),
        ("gptq", "Int4"),
        ("gptq", "Int8"),
        ("awq", "Int4"),
        ("fp8", "FP8"),
        ("bnb", "4-bit"),
        ("bnb", "8-bit"),
    ],
)
def test_formats_and_quantizations_it_serves(host: PluginHost, fmt: str, quantization: str) -> None:
    assert passes_model_rules(answer(host, spec(fmt, quantization)))


@pytest.mark.parametrize(
    ("fmt", "quantization", "reason"),
    [
        ("fp4", "none", "serves formats pytorch, gptq, awq, fp8, bnb, not 'fp4'"),
        ("ggufv2", "Q4_K_M", "not 'ggufv2'"),
        ("mlx", "4bit", "not 'mlx'"),
        ("pytorch", "Int8", "serves pytorch models quantized as none, not 'Int8'"),
        ("awq", "Int8", "serves awq models quantized as Int4, not 'Int8'"),
        ("gptq", "Int2", "serves gptq models quantized as Int3 or Int4 or Int8, not 'Int2'"),
    ],
)
def test_other_formats_are_refused_with_the_rule(host: PluginHost, fmt: str, quantization: str, reason: str) -> None:
    match = answer(host, spec(fmt, quantization))
    assert not match.ok and not match.explicit_only
    assert reason in match.reason


def test_needs_linux(host: PluginHost) -> None:
    match = answer(host, spec(), MAC)
    assert not match.ok and match.reason == "SGLang runs on Linux only, not on Darwin"


def test_needs_a_cuda_device(host: PluginHost) -> None:
    match = answer(host, spec(), CPU_ONLY)
    assert not match.ok and not match.explicit_only  # unlike vLLM or MLX, SGLang cannot run on a CPU at all
    assert "needs at least one CUDA device" in match.reason


def test_family_must_be_in_the_supported_list(host: PluginHost) -> None:
    for family in ("llama-3.1-instruct", "Qwen3", "mixtral-instruct-v0.1", "deepseek-v3"):
        assert passes_model_rules(answer(host, spec(family=family))), family
    match = answer(host, spec(family="phi-3-mini-128k-instruct"))
    assert not match.ok
    assert match.reason == "model family 'phi-3-mini-128k-instruct' is not in SGLang's list of supported models"


def test_a_model_by_path_is_recognised_by_its_architecture(host: PluginHost, tmp_path: Path) -> None:
    path = tinymodels.ensure("qwen3-tiny")  # architectures: Qwen3ForCausalLM
    by_path = ModelSpec(name="my-model", format="pytorch", source=ModelSource(path=str(path)))
    assert passes_model_rules(answer(host, by_path))
    (tmp_path / "config.json").write_text('{"architectures": ["Phi3ForCausalLM"]}')
    other = ModelSpec(name="my-phi", format="pytorch", source=ModelSource(path=str(tmp_path)))
    match = answer(host, other)
    assert (
        match.reason
        == "model family 'my-phi' (architecture Phi3ForCausalLM) is not in SGLang's list of supported models"
    )


def test_embedding_models_are_refused(host: PluginHost) -> None:
    match = answer(host, spec(abilities=["embed"], model_type="embedding"))
    assert not match.ok and "text-generation" in match.reason


def test_install_check_comes_last(host: PluginHost) -> None:
    match = answer(host, spec())
    if INSTALLED:
        assert match.ok and match.score > 0
    else:
        assert not match.ok and match.reason == NOT_INSTALLED
