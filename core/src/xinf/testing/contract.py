"""``EngineContract``: the behaviour every engine plugin must show.

An engine's test module subclasses it and provides a ``spec`` fixture (and,
when the defaults do not fit, the others)::

    class TestLlamaCpp(EngineContract):
        engine = "llama.cpp"

        @pytest.fixture(scope="class")
        @classmethod
        def spec(cls) -> ModelSpec: ...

        @pytest.fixture(scope="class")
        @classmethod
        def options(cls) -> dict: ...   # optional, default {}

        @pytest.fixture(scope="class")
        @classmethod
        def embed_spec(cls) -> ModelSpec | None: ...   # required when the engine implements embed

        @pytest.fixture(scope="class")
        @classmethod
        def operation_specs(cls) -> dict[str, ModelSpec]: ...   # {"rerank": spec, ...} for the other model types

The tests load the engine in the test process through its entry point and
call every hook (``match_model``, ``estimate_vram``, ``load``, ``generate``,
``embed``, ``convert_ids_to_tokens``, ``unload``, and ``rerank``,
``transcribe``, ``speech`` and ``text_to_image`` for the other model types)
as the server and the replica process do.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import io
import json
import math
import struct
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from xinf.devices import inventory
from xinf.errors import InvalidRequest, XinfError
from xinf.operations import (
    AudioChunk,
    ImageEditRequest,
    ImageRequest,
    ImageResult,
    RerankRequest,
    RerankResult,
    SpeechRequest,
    TranscribeRequest,
    TranscribeResult,
    TranscribeStreamRequest,
    TranscriptPiece,
)
from xinf.plugins import GROUP, PluginHost
from xinf.types import (
    Chunk,
    EmbedRequest,
    EmbedResult,
    EngineMatch,
    GenerateRequest,
    MemoryEstimate,
    ModelSource,
    ModelSpec,
    Placement,
)

HEAVY = ("torch", "transformers", "xllamacpp", "vllm", "mlx", "mlx_lm", "sglang", "tensorflow", "jax")


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


#: the hooks of the other model types, and the ability their model has
OPERATIONS = {
    "rerank": "rerank",
    "transcribe": "audio2text",
    "transcribe_stream": "audio2text",
    "speech": "text2audio",
    "text_to_image": "text2image",
    "image_to_image": "text2image",
}


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A 440 Hz tone as a WAV file: audio any speech-to-text engine can decode."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


async def resolved(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


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

    @pytest.fixture(scope="class")
    @classmethod
    def embed_spec(cls) -> ModelSpec | None:
        """An embedding model the engine serves, to test ``embed``; None when the engine embeds nothing."""
        return None

    @pytest.fixture(scope="class")
    @classmethod
    def embed_options(cls) -> dict[str, Any]:
        return {}

    @pytest.fixture(scope="class")
    @classmethod
    def operation_specs(cls) -> dict[str, ModelSpec]:
        """A model to test each hook of ``OPERATIONS`` the engine implements on (``{"rerank": spec}``)."""
        return {}

    @contextlib.asynccontextmanager
    async def loaded_for(self, host: PluginHost, specs: dict[str, ModelSpec], hook: str) -> AsyncIterator[Any]:
        """The model ``specs`` gives for ``hook``, loaded for one test; skips when the engine lacks the hook."""
        if not host.has_hook(self.engine, hook):
            pytest.skip(f"the engine does not implement {hook}")
        loaded = await self.load(host, specs[hook], {})
        try:
            yield loaded
        finally:
            await self.unload(host, loaded)

    @classmethod
    async def load(cls, host: PluginHost, spec: ModelSpec, options: dict[str, Any]) -> Any:
        """``load`` as a replica calls it: with a copy of the options; awaited when it is a coroutine."""
        loaded = host.hook(cls.engine, "load")(spec=spec, options=dict(options), placement=Placement())
        return await loaded if inspect.isawaitable(loaded) else loaded

    @classmethod
    async def unload(cls, host: PluginHost, loaded: Any) -> None:
        if host.has_hook(cls.engine, "unload"):
            result = host.hook(cls.engine, "unload")(model=loaded)
            if inspect.isawaitable(result):
                await result

    @pytest_asyncio.fixture(scope="class", loop_scope="class")
    @classmethod
    async def model(cls, host: PluginHost, spec: ModelSpec, options: dict[str, Any]) -> AsyncIterator[Any]:
        loaded = await cls.load(host, spec, options)
        yield loaded
        await cls.unload(host, loaded)

    @pytest_asyncio.fixture(scope="class", loop_scope="class")
    @classmethod
    async def embed_model(
        cls, host: PluginHost, embed_spec: ModelSpec | None, embed_options: dict[str, Any]
    ) -> AsyncIterator[Any]:
        if embed_spec is None:
            yield None
            return
        loaded = await cls.load(host, embed_spec, embed_options)
        yield loaded
        await cls.unload(host, loaded)

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

    def test_warm_imports_import_in_a_worker(self, host: PluginHost) -> None:
        """Every module of the plugin's ``WARM_IMPORTS`` imports as a warm-pool worker imports it (xinf.warmpool)."""
        from xinf.replica import warm

        declared = getattr(host.pm.get_plugin(self.engine), "WARM_IMPORTS", None) or []
        assert isinstance(declared, list) and all(isinstance(name, str) for name in declared)
        assert warm.warm_imports(self.engine) == declared

    def test_matches_its_model(self, host: PluginHost, spec: ModelSpec) -> None:
        answer = host.hook(self.engine, "match_model")(spec=spec, hardware=inventory())
        assert isinstance(answer, EngineMatch)
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

    # ------------------------------------------------------------ tokens

    @aio
    async def test_convert_ids_to_tokens_spells_each_id(self, host: PluginHost, model: Any) -> None:
        """Optional hook: one token per id, row by row; an id outside the vocabulary is a 400."""
        if not host.has_hook(self.engine, "convert_ids_to_tokens"):
            pytest.skip("the engine does not implement convert_ids_to_tokens (optional)")
        convert = host.hook(self.engine, "convert_ids_to_tokens")

        async def call(ids: list[list[int]]) -> Any:
            result = convert(model=model, ids=ids)
            return await result if inspect.isawaitable(result) else result

        rows = await call([[0, 1, 2], [1], []])
        assert [len(row) for row in rows] == [3, 1, 0]
        assert all(isinstance(token, str) for row in rows for token in row)
        assert rows[1] == [rows[0][1]]
        with pytest.raises(InvalidRequest) as info:
            await call([[10**9]])
        assert info.value.status == 400

    # ------------------------------------------------------------ LoRA adapters

    @aio
    async def test_update_adapters_refuses_what_it_cannot_load(self, host: PluginHost, model: Any) -> None:
        """Optional hook: an adapter the engine cannot load is a client error (400) naming why, never a crash."""
        if not host.has_hook(self.engine, "update_adapters"):
            pytest.skip("the engine does not implement update_adapters (optional)")
        missing = {"name": "missing", "path": "/nonexistent/xinf-contract-adapter"}  # as a Call frame carries it
        with pytest.raises(XinfError) as info:
            result = host.hook(self.engine, "update_adapters")(model=model, add=[missing], remove=[])
            if inspect.isawaitable(result):
                await result
        assert 400 <= info.value.status < 500 and info.value.message

    # ------------------------------------------------------------ embeddings

    def test_embed_has_a_model_to_test(self, host: PluginHost, embed_spec: ModelSpec | None) -> None:
        """An engine that implements ``embed`` names an embedding model (``embed_spec``) for the tests below."""
        if host.has_hook(self.engine, "embed"):
            assert embed_spec is not None, f"{self.engine} implements embed: give the contract an embed_spec fixture"
            assert "embed" in embed_spec.abilities

    @aio
    async def test_embed_returns_one_vector_per_input(self, host: PluginHost, embed_model: Any) -> None:
        if embed_model is None:
            pytest.skip("the engine embeds nothing (no embed_spec)")
        texts = ["The sea is calm today.", "A cat sleeps on the sofa.", "The sea is calm today."]
        result = host.hook(self.engine, "embed")(model=embed_model, request=EmbedRequest(input=texts))
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, EmbedResult)
        assert len(result.embeddings) == len(texts)
        dims = {len(vector) for vector in result.embeddings}
        assert len(dims) == 1 and dims.pop() > 0
        assert all(isinstance(x, float) for vector in result.embeddings for x in vector)
        assert result.embeddings[0] == pytest.approx(result.embeddings[2], abs=1e-4)  # same text, same vector
        assert result.embeddings[0] != pytest.approx(result.embeddings[1], abs=1e-4)
        assert result.prompt_tokens > 0

    # ------------------------------------------------------------ other model types

    def test_each_operation_has_a_model_to_test(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        """An engine that implements rerank, transcribe, speech or text_to_image names a model for each."""
        for hook, ability in OPERATIONS.items():
            if host.has_hook(self.engine, hook):
                assert hook in operation_specs, f"{self.engine} implements {hook}: give operation_specs a model for it"
                assert ability in operation_specs[hook].abilities

    @aio
    async def test_rerank_scores_each_document(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        async with self.loaded_for(host, operation_specs, "rerank") as model:
            request = RerankRequest(query="the sea", documents=["The sea is calm.", "Bread needs flour."])
            result = await resolved(host.hook(self.engine, "rerank")(model=model, request=request))
        assert isinstance(result, RerankResult)
        assert len(result.scores) == len(result.tokens) == 2 and all(t > 0 for t in result.tokens)

    @aio
    async def test_transcribe_hears_a_file(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        async with self.loaded_for(host, operation_specs, "transcribe") as model:
            request = TranscribeRequest(audio=tone_wav())
            result = await resolved(host.hook(self.engine, "transcribe")(model=model, request=request))
            with pytest.raises(InvalidRequest):
                await resolved(host.hook(self.engine, "transcribe")(model=model, request=TranscribeRequest(audio=b"x")))
        assert isinstance(result, TranscribeResult)
        assert result.duration == pytest.approx(1.0, abs=0.1)

    @aio
    async def test_transcribe_stream_says_the_duration_first(
        self, host: PluginHost, operation_specs: dict[str, ModelSpec]
    ) -> None:
        async with self.loaded_for(host, operation_specs, "transcribe_stream") as model:
            request = TranscribeStreamRequest(audio=tone_wav())
            pieces = [p async for p in host.hook(self.engine, "transcribe_stream")(model=model, request=request)]
        assert pieces and all(isinstance(p, TranscriptPiece) for p in pieces)
        assert pieces[0].text == "" and pieces[0].duration == pytest.approx(1.0, abs=0.1)

    @aio
    async def test_speech_streams_audio(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        async with self.loaded_for(host, operation_specs, "speech") as model:
            request = SpeechRequest(input="The sea is calm today.")
            chunks = [c async for c in host.hook(self.engine, "speech")(model=model, request=request)]
        assert chunks and all(isinstance(c, AudioChunk) and c.sample_rate > 0 for c in chunks)
        assert sum(len(c.pcm) for c in chunks) > 0

    @aio
    async def test_text_to_image_makes_pngs(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        async with self.loaded_for(host, operation_specs, "text_to_image") as model:
            request = ImageRequest(prompt="a red square", n=1, width=64, height=64, seed=1)
            result = await resolved(host.hook(self.engine, "text_to_image")(model=model, request=request))
        assert isinstance(result, ImageResult) and len(result.images) == 1
        assert result.images[0].startswith(b"\x89PNG")

    @aio
    async def test_image_to_image_keeps_the_size(self, host: PluginHost, operation_specs: dict[str, ModelSpec]) -> None:
        async with self.loaded_for(host, operation_specs, "image_to_image") as model:
            made = await resolved(
                host.hook(self.engine, "text_to_image")(
                    model=model, request=ImageRequest(prompt="a red square", width=64, height=48, seed=1)
                )
            )
            request = ImageEditRequest(image=made.images[0], prompt="a blue square", seed=1)
            result = await resolved(host.hook(self.engine, "image_to_image")(model=model, request=request))
            with pytest.raises(InvalidRequest):
                bad = ImageEditRequest(image=b"not a picture", prompt="a blue square")
                await resolved(host.hook(self.engine, "image_to_image")(model=model, request=bad))
        assert isinstance(result, ImageResult) and len(result.images) == 1
        assert result.images[0].startswith(b"\x89PNG") and result.images[0][16:24] == made.images[0][16:24]

    @aio
    async def test_context_overflow_is_a_client_error(self, host: PluginHost, model: Any) -> None:
        if self.overflow_words is None:
            pytest.skip("no overflow size given for this engine")
        prompt = "hello " * self.overflow_words
        with pytest.raises(InvalidRequest) as info:
            await collect(self.generate(host, model, messages=[{"role": "user", "content": prompt}], max_tokens=4))
        assert info.value.status == 400
