"""The Anthropic Messages API on a real `xinf serve`, driven with the real anthropic SDK (test engine models)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from xinf.testing.server import ServerProcess

anthropic = pytest.importorskip("anthropic")

KEY = "sk-anthropic-test"
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("anthropic"), args=["--api-key", KEY]) as server:
        server.http.headers["authorization"] = f"Bearer {KEY}"
        server.launch(model_name="xinf-test-chat", model_uid="chat")
        server.launch(model_name="xinf-test-tools", model_uid="tools", script=CALL, chunks=[4, 1])
        server.launch(
            model_name="xinf-test-reasoning", model_uid="thinker", script="<think>weigh it</think>Paris.", chunks=[3]
        )
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0) as client:
        yield client


def test_a_message_with_a_system_prompt(client: Any) -> None:
    plain = client.messages.create(model="chat", max_tokens=5, messages=ASK)
    assert plain.type == "message" and plain.role == "assistant" and plain.model == "chat"
    assert plain.id.startswith("msg_")
    assert [b.type for b in plain.content] == ["text"] and len(plain.content[0].text.split()) == 5
    assert plain.stop_reason == "max_tokens"
    assert plain.usage.output_tokens == 5 and plain.usage.input_tokens == 3
    with_system = client.messages.create(model="chat", max_tokens=5, system="Be brief and kind.", messages=ASK)
    assert with_system.usage.input_tokens == 3 + 4  # the test engine counts the system prompt's words too


def test_a_streamed_message(client: Any) -> None:
    with client.messages.stream(model="chat", max_tokens=6, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 6 and final.content[0].text == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_tool_use_and_tool_results(client: Any) -> None:
    reply = client.messages.create(model="tools", max_tokens=200, messages=ASK, tools=[WEATHER])
    assert reply.stop_reason == "tool_use"
    text, call = reply.content
    assert text.type == "text" and text.text == "Checking."
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    assert call.id

    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22 C, sunny"}]},
    ]
    again = client.messages.create(model="tools", max_tokens=200, messages=history, tools=[WEATHER])
    assert again.stop_reason == "tool_use"
    forced = client.messages.create(
        model="tools",
        max_tokens=200,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert forced.content[-1].input == {"city": "Paris"}
    none = client.messages.create(
        model="tools", max_tokens=200, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [b.type for b in none.content] == ["text"] and none.stop_reason == "end_turn"


def test_streamed_tool_use(client: Any) -> None:
    with client.messages.stream(model="tools", max_tokens=200, messages=ASK, tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the arguments arrive as partial JSON
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "Paris"}


def test_thinking_blocks_from_a_reasoning_model(client: Any) -> None:
    reply = client.messages.create(
        model="thinker", max_tokens=100, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "weigh it" and reply.content[1].text == "Paris."
    with client.messages.stream(model="thinker", max_tokens=100, messages=ASK) as stream:
        thoughts = "".join(e.thinking for e in stream if e.type == "thinking")
    assert thoughts == "weigh it"
    hidden = client.messages.create(model="thinker", max_tokens=100, messages=ASK, thinking={"type": "disabled"})
    assert [b.type for b in hidden.content] == ["text"]


def test_count_tokens(client: Any) -> None:
    counted = client.messages.count_tokens(model="chat", messages=ASK, system="Be brief and kind.")
    assert counted.input_tokens == 7


def test_errors_are_anthropic_shaped(server: ServerProcess, client: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as no_tools:
        client.messages.create(model="chat", max_tokens=5, messages=ASK, tools=[WEATHER])
    assert "'chat' does not support tools" in no_tools.value.body["error"]["message"]
    raw = server.http.post("/v1/messages", json={"model": "chat", "messages": ASK})  # no max_tokens
    assert raw.status_code == 400
    assert raw.json()["type"] == "error" and raw.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in raw.json()["error"]["message"]


def test_the_api_key_as_x_api_key_or_bearer(server: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            wrong.messages.create(model="chat", max_tokens=2, messages=ASK)
    assert refused.value.body["error"]["type"] == "authentication_error"
    bearer = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": "chat", "max_tokens": 2, "messages": ASK},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert bearer.status_code == 200 and bearer.json()["usage"]["output_tokens"] == 2
