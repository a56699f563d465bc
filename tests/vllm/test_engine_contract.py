"""vLLM's CPU build passes the engine contract on a tiny Qwen3-shaped model, plus vLLM's own extras.

One engine start for the whole class (about 25 s): every test shares it, on
one event loop (vLLM binds its output handler to the loop it starts on).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from vllm_testing import ENV, HAS_VLLM, OPTIONS, SKIP_REASON, tiny_model

from xinf.errors import InvalidRequest, LaunchError
from xinf.plugins import PluginHost
from xinf.testing.contract import EngineContract, aio, collect, text_of
from xinf.types import ModelSource, ModelSpec, Placement

pytestmark = pytest.mark.skipif(not HAS_VLLM, reason=SKIP_REASON)

QUESTION = [{"role": "user", "content": "Say something about the sea."}]


class TestVllmEngine(EngineContract):
    engine = "vllm"
    overflow_words = 700  # more tokens than max_model_len=512

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def environment(cls) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in ENV.items():
                mp.setenv(key, value)
            yield

    @pytest.fixture(scope="class")
    @classmethod
    def spec(cls) -> ModelSpec:
        return ModelSpec(
            name="qwen3",
            family="qwen3",
            format="pytorch",
            builtin=True,
            reasoning_start_tag="<think>",
            reasoning_end_tag="</think>",
            tool_parser="qwen",  # as the catalogue's qwen3 family says
            source=ModelSource(path=str(tiny_model())),
        )

    @pytest.fixture(scope="class")
    @classmethod
    def options(cls) -> dict[str, Any]:
        return dict(OPTIONS)

    # ------------------------------------------------------------ beyond the contract

    @aio
    async def test_enable_thinking_reaches_the_chat_template(self, host: PluginHost, model: Any) -> None:
        async def prompt_tokens(**kwargs: Any) -> int:
            chunks = await collect(self.generate(host, model, messages=QUESTION, max_tokens=1, **kwargs))
            assert chunks[-1].usage is not None
            return chunks[-1].usage.prompt_tokens

        thinking = await prompt_tokens(chat_template_kwargs={"enable_thinking": True})
        plain = await prompt_tokens(chat_template_kwargs={"enable_thinking": False})
        # Qwen3's template closes an empty "<think>\n\n</think>\n\n" block when thinking is off.
        assert plain > thinking

    @aio
    async def test_tools_reach_the_chat_template(self, host: PluginHost, model: Any) -> None:
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        without = await collect(self.generate(host, model, messages=QUESTION, max_tokens=1))
        with_tool = await collect(self.generate(host, model, messages=QUESTION, max_tokens=1, tools=[tool]))
        assert without[-1].usage is not None and with_tool[-1].usage is not None
        assert with_tool[-1].usage.prompt_tokens > without[-1].usage.prompt_tokens + 20

    @aio
    async def test_a_seed_repeats_a_sampled_answer(self, host: PluginHost, model: Any) -> None:
        async def sample(seed: int) -> str:
            return text_of(
                await collect(self.generate(host, model, temperature=1.0, seed=seed, max_tokens=12, ignore_eos=True))
            )

        first = await sample(7)
        assert first and await sample(7) == first

    @aio
    async def test_logprobs_list_the_asked_alternatives(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(self.generate(host, model, max_tokens=4, ignore_eos=True, logprobs=3))
        items = [item for c in chunks for item in c.logprobs or []]
        assert len(items) == 4
        for item in items:
            assert item.logprob <= 0
            assert len(item.top_logprobs) == 3
            assert item.top_logprobs[0][1] >= item.top_logprobs[-1][1]

    @aio
    async def test_max_tokens_past_the_context_stops_at_its_end(self, host: PluginHost, model: Any) -> None:
        chunks = await collect(
            self.generate(host, model, prompt="Once upon a time", max_tokens=100000, ignore_eos=True)
        )
        usage = chunks[-1].usage
        assert chunks[-1].finish_reason == "length"
        assert usage is not None and usage.prompt_tokens + usage.completion_tokens == OPTIONS["max_model_len"]

    @aio
    async def test_a_closed_stream_is_aborted_in_the_engine(self, host: PluginHost, model: Any) -> None:
        stream = self.generate(host, model, max_tokens=400, ignore_eos=True)
        async for _ in stream:
            break
        assert model.engine.get_num_unfinished_requests() == 1
        await stream.aclose()  # type: ignore[attr-defined]
        assert model.engine.get_num_unfinished_requests() == 0

    @aio
    async def test_json_schema_constrains_the_output(self, host: PluginHost, model: Any) -> None:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        chunks = await collect(self.generate(host, model, max_tokens=40, response_format=fmt))
        # Random weights write only what the schema allows (though they may pad it with whitespace at length).
        assert re.match(r'\s*\{\s*"ok"', text_of(chunks)), text_of(chunks)

    @aio
    async def test_out_of_range_sampling_is_a_client_error(self, host: PluginHost, model: Any) -> None:
        with pytest.raises(InvalidRequest) as info:
            await collect(self.generate(host, model, top_p=0.0, max_tokens=2))
        assert info.value.status == 400 and "top_p" in str(info.value)

    @aio
    async def test_unknown_options_fail_the_launch_naming_them(self, host: PluginHost, spec: ModelSpec) -> None:
        with pytest.raises(LaunchError) as info:
            await host.hook(self.engine, "load")(spec=spec, options={"n_ctx": 512}, placement=Placement())
        assert "unknown vLLM option(s) n_ctx" in str(info.value)

    def test_socket_files_stay_in_a_private_folder(self, model: Any) -> None:
        assert os.path.basename(model.rpc_dir).startswith("xinf-vllm-") and os.listdir(model.rpc_dir)
