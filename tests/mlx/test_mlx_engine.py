"""The mlx engine in-process: the engine contract, matching rules, options, memory estimate, sampling."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from xinf.errors import ContextLengthExceeded, InvalidRequest, LaunchError
from xinf.plugins import PluginHost
from xinf.testing.contract import EngineContract, aio, collect, text_of
from xinf.types import Hardware, ModelSource, ModelSpec, Placement

pytest.importorskip("mlx_lm")

GiB = 1 << 30
OPTIONS = {"context_length": 1024, "max_num_seqs": 4}
APPLE = Hardware(system="Darwin", machine="arm64", cpu_count=8, memory_total=16 * GiB, memory_available=12 * GiB)
INTEL_MAC = Hardware(system="Darwin", machine="x86_64", cpu_count=8, memory_total=16 * GiB, memory_available=12 * GiB)
LINUX = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=24 * GiB, memory_available=20 * GiB)
WINDOWS = Hardware(system="Windows", machine="AMD64", cpu_count=8, memory_total=16 * GiB, memory_available=12 * GiB)


class TestMLXEngine(EngineContract):
    engine = "mlx"
    foreign_format = "ggufv2"
    overflow_words = 1500  # more tokens than context_length=1024

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls, mlx_dir: Path) -> ModelSpec:
        return ModelSpec(name="qwen3-tiny-4bit", format="mlx", source=ModelSource(path=str(mlx_dir)))

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return dict(OPTIONS)

    # ------------------------------------------------------------ beyond the contract

    @aio
    async def test_seed_makes_sampling_reproducible_inside_a_batch(self, host: PluginHost, model: Any) -> None:
        def run(seed: int) -> Any:
            return collect(
                self.generate(host, model, prompt="The sea", max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
            )

        # the same seed twice, batched together with other requests
        a, b, other, _ = await asyncio.gather(run(5), run(5), run(6), run(7))
        assert text_of(a) == text_of(b)
        assert text_of(a) != text_of(other)

    @aio
    async def test_stream_is_the_same_text_as_one_piece(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(self.generate(host, model, prompt="The sea", max_tokens=20, ignore_eos=True))
        assert len(chunks) > 2  # really streamed
        ids = [i for c in chunks for i in (c.token_ids or [])]
        assert len(ids) == 20
        assert text_of(chunks) == model.tokenizer.decode(ids, skip_special_tokens=True)

    @aio
    async def test_completion_keeps_the_leading_space(self, host: PluginHost, model: Any) -> None:
        # the text continues the prompt: decoding prompt + output must give prompt + text
        chunks = await collect(self.generate(host, model, prompt="The sea was", max_tokens=8, ignore_eos=True))
        prompt_ids = model.tokenizer.encode("The sea was")
        ids = [i for c in chunks for i in (c.token_ids or [])]
        full = model.tokenizer.decode(prompt_ids + ids, skip_special_tokens=True)
        assert full == "The sea was" + text_of(chunks)

    @aio
    async def test_logprobs(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(self.generate(host, model, prompt="The sea", max_tokens=3, logprobs=2, ignore_eos=True))
        entries = [lp for c in chunks for lp in (c.logprobs or [])]
        assert len(entries) == 3
        for entry in entries:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
            # greedy: the chosen token is the most likely one
            assert entry.top_logprobs[0] == (entry.token, entry.logprob)

    @aio
    async def test_enable_thinking_reaches_the_template(self, host: PluginHost, model: Any) -> None:
        question = [{"role": "user", "content": "Why is the sky blue?"}]

        async def prompt_tokens(**kwargs: Any) -> int:
            chunks = await collect(self.generate(host, model, messages=question, max_tokens=1, **kwargs))
            assert chunks[-1].usage is not None
            return chunks[-1].usage.prompt_tokens

        off = await prompt_tokens(chat_template_kwargs={"enable_thinking": False})
        on = await prompt_tokens(chat_template_kwargs={"enable_thinking": True})
        empty_block = len(model.tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False))
        assert off - on == empty_block
        assert await prompt_tokens() == on  # Qwen3 thinks unless told not to

    @aio
    async def test_bad_requests_are_client_errors(self, host: PluginHost, model: Any) -> None:
        with pytest.raises(ContextLengthExceeded, match="context size of 1024"):
            await collect(self.generate(host, model, prompt="The sea", max_tokens=5000))
        with pytest.raises(InvalidRequest, match="only text responses"):
            await collect(self.generate(host, model, prompt="x", response_format={"type": "json_object"}))
        with pytest.raises(InvalidRequest, match="empty"):
            await collect(self.generate(host, model, prompt=""))

    @aio
    async def test_more_requests_than_slots_all_finish(self, host: PluginHost, model: Any) -> None:
        # max_num_seqs=4: the other four wait for a slot, and a closed one frees its slot for them
        streams = [self.generate(host, model, prompt=f"Story {i}", max_tokens=6, ignore_eos=True) for i in range(8)]
        first = streams.pop()
        async for _ in first:
            break
        await first.aclose()  # type: ignore[attr-defined]
        results = await asyncio.wait_for(asyncio.gather(*(collect(s) for s in streams)), 120)
        assert [r[-1].usage.completion_tokens for r in results] == [6] * 7  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ matching


def match(host: PluginHost, spec: ModelSpec, hardware: Hardware) -> Any:
    return {m.engine: m for m in host.match(spec, hardware)}["mlx"]


@pytest.fixture(scope="module")
def mlx_host() -> PluginHost:
    return PluginHost.discover(only=["mlx"])


def test_mlx_format_is_preferred_on_apple_silicon(mlx_host: PluginHost) -> None:
    answer = match(mlx_host, ModelSpec(name="m", format="mlx"), APPLE)
    assert answer.ok and answer.score == 100


def test_on_linux_mlx_serves_only_when_named(mlx_host: PluginHost, mlx_dir: Path) -> None:
    spec = ModelSpec(name="m", format="mlx", source=ModelSource(path=str(mlx_dir)))
    answer = match(mlx_host, spec, LINUX)
    assert not answer.ok and answer.explicit_only
    assert "CPU only" in answer.reason and "--model-engine mlx" in answer.reason
    with pytest.raises(InvalidRequest, match="chosen explicitly"):
        mlx_host.choose(spec, LINUX)
    assert mlx_host.choose(spec, LINUX, engine="mlx").engine == "mlx"


def test_unquantized_hf_directories_are_served_when_named(mlx_host: PluginHost) -> None:
    for hardware in (APPLE, LINUX):
        answer = match(mlx_host, ModelSpec(name="m", format="pytorch"), hardware)
        assert not answer.ok and answer.explicit_only
        assert "transformers is the default" in answer.reason


@pytest.mark.parametrize(
    ("spec", "hardware", "reason"),
    [
        (ModelSpec(name="m", format="ggufv2"), APPLE, "not format 'ggufv2'"),
        (ModelSpec(name="m", format="gptq", quantization="Int4"), APPLE, "not format 'gptq'"),
        (ModelSpec(name="m", format="pytorch", quantization="8-bit"), APPLE, "only unquantized, not '8-bit'"),
        (ModelSpec(name="m", format="mlx", abilities=["embed"], model_type="embedding"), APPLE, "text-generation"),
        (ModelSpec(name="m", format="mlx"), INTEL_MAC, "not on Darwin x86_64"),
        (ModelSpec(name="m", format="mlx"), WINDOWS, "not on Windows AMD64"),
    ],
)
def test_refusals_say_why(mlx_host: PluginHost, spec: ModelSpec, hardware: Hardware, reason: str) -> None:
    answer = match(mlx_host, spec, hardware)
    assert not answer.ok and not answer.explicit_only
    assert reason in answer.reason


def test_missing_mlx_is_a_refusal_with_the_install_line(mlx_host: PluginHost, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlx_lm" else real(name, *a))
    answer = match(mlx_host, ModelSpec(name="m", format="mlx"), APPLE)
    assert not answer.ok and "mlx-lm is not installed here: pip install mlx-lm" in answer.reason


# ------------------------------------------------------------------------------------------ options and loading


def test_unknown_and_invalid_options_are_launch_errors(mlx_host: PluginHost, hf_dir: Path) -> None:
    load = mlx_host.hook("mlx", "load")
    spec = ModelSpec(name="m", format="pytorch", source=ModelSource(path=str(hf_dir)))
    with pytest.raises(LaunchError, match="unknown mlx option 'max_num_seq' \\(did you mean max_num_seqs"):
        load(spec=spec, options={"max_num_seq": 2}, placement=Placement())
    with pytest.raises(LaunchError, match="max_num_seqs must be at least 1"):
        load(spec=spec, options={"max_num_seqs": 0}, placement=Placement())
    missing = ModelSpec(name="m", format="mlx", source=ModelSource(path=str(hf_dir / "nope")))
    with pytest.raises(LaunchError, match="needs a local model directory"):
        load(spec=missing, options={}, placement=Placement())


def test_a_directory_mlx_cannot_load_fails_the_launch(mlx_host: PluginHost, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_arch", "vocab_size": 8}))
    spec = ModelSpec(name="m", format="mlx", source=ModelSource(path=str(tmp_path)))
    with pytest.raises(LaunchError, match="mlx-lm could not load"):
        mlx_host.hook("mlx", "load")(spec=spec, options={}, placement=Placement())


# ------------------------------------------------------------------------------------------ memory estimate


def write_shape(path: Path, weights: int, **config: Any) -> ModelSpec:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    with open(path / "model.safetensors", "wb") as f:
        f.truncate(weights)  # sparse: the size is what counts
    return ModelSpec(name=path.name, format="mlx", source=ModelSource(path=str(path)))


LLAMA3_8B = dict(
    model_type="llama",
    num_hidden_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
    torch_dtype="bfloat16",
)


def test_estimate_for_a_llama3_8b_shape(mlx_host: PluginHost, tmp_path: Path) -> None:
    spec = write_shape(tmp_path / "llama3-8b-4bit", 4_517_734_400, **LLAMA3_8B)
    estimate = mlx_host.hook("mlx", "estimate_vram")
    # K and V: 2 x 32 layers x 8 heads x 128 dims x 2 bytes = 128 KiB a token; 8192 tokens = exactly 1 GiB
    one = estimate(spec=spec, options={"max_num_seqs": 1}, devices=[])
    assert one.weights == 4_517_734_400
    assert one.kv_cache == GiB
    # the logits and MLP activations of one 2048-token prefill chunk, in bf16
    assert one.overhead == 2048 * (128256 + 14336) * 2
    assert one.host == one.total and one.per_device == []
    # four sequences need four caches; a rotating 2048-token cache a quarter each; a shorter context less
    assert estimate(spec=spec, options={"max_num_seqs": 4}, devices=[]).kv_cache == 4 * GiB
    assert estimate(spec=spec, options={"max_num_seqs": 4, "max_kv_size": 2048}, devices=[]).kv_cache == GiB
    assert estimate(spec=spec, options={"max_num_seqs": 1, "context_length": 4096}, devices=[]).kv_cache == GiB // 2


def test_estimate_for_a_qwen3_shape_with_explicit_head_dim(mlx_host: PluginHost, tmp_path: Path) -> None:
    # Qwen3-0.6B: 28 layers, 8 KV heads of 128 (head_dim is not hidden/heads = 64)
    spec = write_shape(
        tmp_path / "qwen3-0.6b",
        1_503_300_328,
        model_type="qwen3",
        num_hidden_layers=28,
        hidden_size=1024,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
        vocab_size=151936,
        max_position_embeddings=40960,
        torch_dtype="bfloat16",
    )
    got = mlx_host.hook("mlx", "estimate_vram")(
        spec=spec, options={"max_num_seqs": 2, "context_length": 32768}, devices=[]
    )
    assert got.kv_cache == 2 * 28 * 8 * 128 * 2 * 32768 * 2  # 7 GiB
    assert got.kv_cache == 7 * GiB


def test_estimate_of_the_tiny_model_matches_its_file(mlx_host: PluginHost, hf_dir: Path) -> None:
    spec = ModelSpec(name="m", format="pytorch", source=ModelSource(path=str(hf_dir)))
    got = mlx_host.hook("mlx", "estimate_vram")(spec=spec, options=dict(OPTIONS), devices=[])
    config = json.loads((hf_dir / "config.json").read_text())
    params = config["xinf_tinymodels"]["parameters"]
    assert got.weights == (hf_dir / "model.safetensors").stat().st_size
    assert 0 < got.weights - 2 * params < 64 * 1024  # bf16 weights plus the safetensors header
    # 4 layers x 2 KV heads x 64 dims x K,V x 2 bytes = 2 KiB a token, 1024 tokens, 4 sequences
    assert got.kv_cache == 2048 * 1024 * 4


def test_a_huge_context_is_a_host_figure_the_placement_refuses(mlx_dir: Path) -> None:
    from xinf.placement import Ledger, plan
    from xinf_mlx.plugin import estimate_vram

    spec = ModelSpec(name="q", format="mlx", source=ModelSource(path=str(mlx_dir)))
    options = {"context_length": 1_000_000_000}
    est = estimate_vram(spec=spec, options=options, devices=[])
    assert est is not None and est.host == est.total > 1 << 40
    machine = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=1 << 36, memory_available=1 << 36)
    with pytest.raises(LaunchError, match=r"TiB of host memory \(RAM\) on this machine"):
        plan(
            uid="q", replicas=1, hardware=machine, ledger=Ledger(), n_gpu=0, gpu_idx=None,
            estimate=lambda devices: estimate_vram(spec=spec, options=options, devices=devices),
        )  # fmt: skip
