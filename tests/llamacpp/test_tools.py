"""Tool calls from SmolLM2-135M on llama.cpp, through a real `xinf serve`, with the openai client and LangChain.

SmolLM2's family declares the Hermes format and a template that renders tools;
forced calls (``required``, a named function) are constrained by llama.cpp's
JSON-schema grammar, so even this tiny model answers with valid calls.
"""

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
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("llamacpp-tools")) as server:
        server.launch(model_name="smollm2-instruct", model_uid="smol", n_ctx=2048, n_parallel=1, n_threads=1)
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    client = server.openai()
    yield client
    client.close()


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs = {"model": "smol", "messages": ASK, "max_tokens": 48, "temperature": 0, **kwargs}
    return client.chat.completions.create(**kwargs)


def test_required_gives_a_valid_call(client: openai.OpenAI) -> None:
    choice = ask(client, tools=[WEATHER, TIME], tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} if call.function.name == "get_weather" else {"timezone"}
    assert choice.message.content is None


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    choice = ask(client, tools=[WEATHER, TIME], tool_choice=named).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments)["timezone"], str)


def test_a_streamed_forced_call_arrives_in_deltas(client: openai.OpenAI) -> None:
    stream = ask(client, tools=[WEATHER], tool_choice="required", stream=True)
    deltas, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert len(deltas) > 2 and "city" in json.loads(arguments)


def test_auto_and_none_answer(client: openai.OpenAI) -> None:
    auto = ask(client, tools=[WEATHER], tool_choice="auto", max_tokens=16).choices[0]
    assert auto.finish_reason in ("stop", "length", "tool_calls")
    if auto.finish_reason == "tool_calls":
        assert json.loads(auto.message.tool_calls[0].function.arguments) is not None
    else:
        assert auto.message.content
    plain = ask(client, tools=[WEATHER], tool_choice="none", max_tokens=8).choices[0]
    assert plain.message.tool_calls is None and plain.message.content


def test_a_multi_turn_tool_conversation(client: openai.OpenAI) -> None:
    first = ask(client, tools=[WEATHER], tool_choice="required").choices[0].message
    call = first.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
    ]

    def answer(result: str) -> Any:
        messages = [*history, {"role": "tool", "tool_call_id": call.id, "content": result}]
        return ask(client, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=4)

    short, long = answer("sunny"), answer("sunny, 22 degrees, light wind from the west, no rain expected today")
    assert short.choices[0].message.content
    # the tool's result reached the prompt through the template
    assert long.usage.prompt_tokens > short.usage.prompt_tokens + 10


def test_langchain_bind_tools_and_structured_output(server: ServerProcess) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        """The weather report for a city."""

        city: str = Field(description="the city", max_length=30)
        celsius: int = Field(description="temperature in degrees Celsius")

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    llm = langchain_openai.ChatOpenAI(
        base_url=f"{server.url}/v1", api_key="none", model="smol", temperature=0, max_tokens=60, max_retries=0
    )
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)

    report = llm.with_structured_output(Weather, method="function_calling").invoke("Paris is at 21 degrees today.")
    assert isinstance(report, Weather)
    assert isinstance(report.celsius, int)
