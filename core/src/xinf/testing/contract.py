"""``EngineContract``: the behaviour every engine plugin must show.

An engine's test module subclasses it and provides two fixtures::

    class TestLlamaCpp(EngineContract):
        engine = "llama.cpp"

        @pytest.fixture(scope="class")
        @classmethod
        def spec(cls) -> ModelSpec: ...

        @pytest.fixture(scope="class")
        @classmethod
        def options(cls) -> dict: ...   # optional, default {}

The tests load the engine in the test process through its entry point and
call the hooks as the replica process does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from xinf.devices import inventory
from xinf.errors import InvalidRequest
from xinf.plugins import GROUP, PluginHost
from xinf.types import Chunk, GenerateRequest, MemoryEstimate, ModelSource, ModelSpec, Placement

HEAVY = ("torch", "transformers", "xllamacpp", "vllm", "mlx", "mlx_lm", "sglang", "tensorflow", "jax")


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


# One event loop per test class: engines that bind to a loop at load (vLLM) keep working.
aio = pytest.mark.asyncio(loop_scope="class")


class EngineContract:
    engine: str = ""
    #: a format this engine does not serve, to check it declines with a reason
    foreign_format: str = "test"
    #: prompt words that surely overflow the context of ``spec`` as loaded, or None to skip
    overflow_words: int | None = None

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return {}

    @pytest.fixture(scope="class")
    @classmethod
    def host(cls) -> PluginHost:
        host = PluginHost.discover(only=[cls.engine])
        info = host.engines.get(cls.engine)
        assert info is not None, f"no entry point named {cls.engine!r} in group {GROUP}"
        assert info.ok, info.error
        return host

    @pytest_asyncio.fixture(scope="class", loop_scope="class")
    @classmethod
    async def model(cls, host: PluginHost, spec: ModelSpec, options: dict[str, Any]) -> AsyncIterator[Any]:
        loaded = host.hook(cls.engine, "load")(spec=spec, options=dict(options), placement=Placement())
        if inspect.isawaitable(loaded):
            loaded = await loaded
        yield loaded
        if host.has_hook(cls.engine, "unload"):
            result = host.hook(cls.engine, "unload")(model=loaded)
            if inspect.isawaitable(result):
                await result

    def generate(self, host: PluginHost, model: Any, **fields: Any) -> AsyncIterator[Chunk]:
        fields.setdefault("temperature", 0.0)
        fields.setdefault("seed", 1)
        if "prompt" not in fields:
            fields.setdefault("messages", [{"role": "user", "content": "Say something about the sea."}])
        return host.hook(self.engine, "generate")(model=model, request=GenerateRequest(**fields))  # type: ignore[no-any-return]

    # ------------------------------------------------------------ plugin hygiene

    def test_import_is_light(self) -> None:
        """Importing the plugin module pulls in no engine library."""
        eps = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == self.engine]
        assert eps, f"entry point {self.engine!r} not installed"
        module = eps[0].value.split(":")[0]
        code = f"import sys, json, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == []

    def test_matches_its_model(self, host: PluginHost, spec: ModelSpec) -> None:
        match = host.choose(spec, inventory(), self.engine)
        assert match.engine == self.engine and (match.score > 0 or match.explicit_only)

    def test_declines_other_formats_with_a_reason(self, host: PluginHost, spec: ModelSpec) -> None:
        other = ModelSpec(name="other", format=self.foreign_format, source=ModelSource(path="/nonexistent"))
        answers = {m.engine: m for m in host.match(other, inventory())}
        assert not answers[self.engine].ok
        assert answers[self.engine].reason

    def test_estimate_has_consistent_parts(self, host: PluginHost, spec: ModelSpec, options: dict[str, Any]) -> None:
        if not host.has_hook(self.engine, "estimate_vram"):
            pytest.skip("engine does not estimate memory")
        estimate = host.hook(self.engine, "estimate_vram")(spec=spec, options=dict(options), devices=[])
        if estimate is None:
            pytest.skip("engine could not estimate this model")
        assert isinstance(estimate, MemoryEstimate)
        assert estimate.weights > 0 and estimate.kv_cache >= 0 and estimate.overhead >= 0
        assert estimate.total == estimate.weights + estimate.kv_cache + estimate.overhead

    # ------------------------------------------------------------ generation

    @aio
    async def test_chat_stream_ends_with_reason_and_usage(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(self.generate(host, model, max_tokens=6))
        assert chunks and all(isinstance(c, Chunk) for c in chunks)
        last = chunks[-1]
        assert last.finish_reason in ("stop", "length")
        assert last.usage is not None and last.usage.prompt_tokens > 0
        assert 1 <= last.usage.completion_tokens <= 6
        assert [c for c in chunks[:-1] if c.finish_reason] == []

    @aio
    async def test_max_tokens_cuts_with_length(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(self.generate(host, model, max_tokens=3, ignore_eos=True))
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3

    @aio
    async def test_completion_prompt(self, host: PluginHost, model: Any, spec: ModelSpec) -> None:
        if "generate" not in spec.abilities:
            pytest.skip("model has no generate ability")
        chunks = await collect(self.generate(host, model, prompt="Once upon a time", max_tokens=4, ignore_eos=True))
        assert text_of(chunks)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4

    @aio
    async def test_stop_string_ends_output_before_it(self, host: PluginHost, model: Any) -> None:
        full = text_of(await collect(self.generate(host, model, max_tokens=12, ignore_eos=True)))
        stop = next((w for w in full.split()[1:] if len(w) >= 2), None)
        if stop is None:
            pytest.skip(f"output too short to pick a stop string: {full!r}")
        cut = await collect(self.generate(host, model, max_tokens=12, ignore_eos=True, stop=[stop]))
        text = text_of(cut)
        assert stop not in text
        assert full.startswith(text)
        assert cut[-1].finish_reason == "stop"

    @aio
    async def test_closing_a_stream_frees_the_engine(self, host: PluginHost, model: Any) -> None:
        stream = self.generate(host, model, max_tokens=200, ignore_eos=True)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        chunks = await asyncio.wait_for(collect(self.generate(host, model, max_tokens=3)), 120)
        assert chunks[-1].finish_reason in ("stop", "length")

    @aio
    async def test_concurrent_requests_all_finish(self, host: PluginHost, model: Any) -> None:
        results = await asyncio.wait_for(
            asyncio.gather(*(collect(self.generate(host, model, max_tokens=4, seed=i)) for i in range(3))), 300
        )
        for chunks in results:
            assert chunks[-1].finish_reason in ("stop", "length")

    @aio
    async def test_context_overflow_is_a_client_error(self, host: PluginHost, model: Any) -> None:
        if self.overflow_words is None:
            pytest.skip("no overflow size given for this engine")
        prompt = "hello " * self.overflow_words
        with pytest.raises(InvalidRequest) as info:
            await collect(self.generate(host, model, messages=[{"role": "user", "content": prompt}], max_tokens=4))
        assert info.value.status == 400
