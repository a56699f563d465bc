"""Tool calls through a real `xinf serve` and the openai client, on the test engine's scripted Hermes output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from xinf.testing.server import ServerProcess

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
SCRIPT = (
    'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
ASK = [{"role": "user", "content": "Weather and time in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("tools")) as server:
        server.launch(model_name="xinf-test-tools", model_uid="tools", script=SCRIPT, chunks=[3, 1, 7])
        server.launch(model_name="xinf-test-chat", model_uid="plain")
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    client = server.openai()
    yield client
    client.close()


def test_tool_calls_come_back_whole_with_finish_reason_tool_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tools", messages=ASK, tools=[WEATHER, TIME], max_tokens=500)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking.\n"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert json.loads(calls[1].function.arguments) == {}
    assert all(c.type == "function" and c.id.startswith("call_") for c in calls)
    assert calls[0].id != calls[1].id


def test_streamed_tool_calls_arrive_as_openai_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tools", messages=ASK, tools=[WEATHER, TIME], tool_choice="auto", max_tokens=500, stream=True
    )
    deltas, content, finish = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert content == "Checking.\n"
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        if delta.index not in calls:
            # the first delta of a call names it whole, with its id and type
            assert delta.id and delta.type == "function" and delta.function.name
            calls[delta.index] = {"name": delta.function.name, "arguments": delta.function.arguments or ""}
        else:
            assert delta.id is None and delta.function.name is None
            calls[delta.index]["arguments"] += delta.function.arguments
    assert len(deltas) > 2, "arguments arrive in fragments"
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]


def test_parallel_tool_calls_false_keeps_the_first_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tools", messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=False, max_tokens=500
    )
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_weather"]


def test_tool_choice_none_means_no_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tools", messages=ASK, tools=[WEATHER, TIME], tool_choice="none", max_tokens=500
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"


def test_without_tools_the_output_is_plain_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tools", messages=ASK, max_tokens=500)
    assert reply.choices[0].message.tool_calls is None
    assert "<tool_call>" in reply.choices[0].message.content


def test_a_tool_conversation_history_is_accepted(client: openai.OpenAI) -> None:
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"},
    ]
    reply = client.chat.completions.create(model="tools", messages=history, tools=[WEATHER], max_tokens=500)
    assert reply.choices[0].finish_reason == "tool_calls"


def bad_request(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(messages=ASK, max_tokens=5, **kwargs)
    body = info.value.response.json()
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]  # type: ignore[no-any-return]


def test_a_model_without_tools_refuses_them_by_name(client: openai.OpenAI) -> None:
    error = bad_request(client, model="plain", tools=[WEATHER])
    assert "'plain' does not support tools" in error["message"]
    assert error["param"] == "tools"


def test_bad_tools_and_tool_choices_are_400s(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "nope"}}
    assert "not among the tools" in bad_request(client, model="tools", tools=[WEATHER], tool_choice=named)["message"]
    assert bad_request(client, model="tools", tool_choice="required")["param"] == "tool_choice"
    assert bad_request(client, model="tools", tools=[{"type": "function"}])["param"] == "tools[0]"
    error = bad_request(client, model="tools", tools=[WEATHER, WEATHER])
    assert "two tools are named 'get_weather'" in error["message"]
    assert bad_request(client, model="tools", tools=[WEATHER], tool_choice="sometimes")["param"] == "tool_choice"
