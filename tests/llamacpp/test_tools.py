"""Tool calls from SmolLM2-135M on llama.cpp, through a real `xinf serve`, with the openai client and LangChain.

SmolLM2's family declares the Hermes format and a template that renders tools;
forced calls (``required``, a named function) are constrained by llama.cpp's
JSON-schema grammar, so even this tiny model answers with valid calls.  The
README's examples (openai with a multi-turn conversation, LangChain's
``bind_tools`` and ``with_structured_output``, anthropic) run here as written.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
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
        server.launch(
            model_name="smollm2-instruct", model_uid="smollm2-instruct", n_ctx=2048, n_parallel=1, n_threads=1
        )
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    client = server.openai()
    yield client
    client.close()


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs = {"model": "smollm2-instruct", "messages": ASK, "max_tokens": 48, "temperature": 0, **kwargs}
    return client.chat.completions.create(**kwargs)


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


def readme_examples() -> list[str]:
    """The Python blocks of the README's "Agents and tools" section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Agents and tools", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


# What each README example prints first: the forced call (openai: required; LangChain: bind_tools and
# with_structured_output; anthropic: tool_choice any), valid for the function's parameters.
README_PRINTS = [
    r"^get_weather \{'city': '[^']+'\}\n.+",
    r"^\[\{'name': 'get_weather', 'args': \{'city': '[^']+'\}, 'id': 'call_\w+', 'type': 'tool_call'\}\]\n"
    r"city='[^']+' celsius=-?\d+\n",
    r"^tool_use get_weather \{'city': '[^']+'\}\n.+",
]


def test_the_readme_examples_run_as_written(server: ServerProcess) -> None:
    """The openai (with a multi-turn tool conversation), LangChain and anthropic examples, against SmolLM2."""
    examples = readme_examples()
    assert len(examples) == len(README_PRINTS)
    for code, expected in zip(examples, README_PRINTS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code.replace("http://127.0.0.1:9997", server.url), "README.md", "exec"), {})
        assert re.match(expected, out.getvalue(), flags=re.S), (code, out.getvalue())
