"""Tool-call parsers: each format's scripted outputs cut at every position give the same calls and content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from xinf.toolcalls import PARSERS, get_parser

WEATHER = '{"city": "Paris", "unit": "c"}'
TRICKY = '{"q": "a } ] \\" <tool_call> [TOOL_CALLS]", "n": [1, {"x": null}], "t": true}'

# (format, model output, expected content, expected calls as (name, arguments JSON))
CASES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("hermes", "Just text, no call.", "Just text, no call.", []),
    (
        "hermes",
        f'<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
        "",
        [("get_weather", WEATHER)],
    ),
    (
        "hermes",
        f'Let me look.\n<tool_call>{{"name": "a", "arguments": {TRICKY}}}</tool_call>\n'
        f'<tool_call>\n{{"arguments": {{}}, "name": "b"}}\n</tool_call>',
        "Let me look.\n",
        [("a", TRICKY), ("b", "{}")],
    ),
    (
        "hermes",
        '<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{\\"y\\": 2}"}]</tool_call>',
        "",
        [("a", '{"x": 1}'), ("b", '{"y": 2}')],
    ),
    ("hermes", '<tool_call>{"name": "ping"}</tool_call> done', "done", [("ping", "{}")]),
    ("hermes", "a <tool_call>not json</tool_call> b", "a <tool_call>not json</tool_call> b", []),
    ("hermes", 'cut <tool_call>{"name": "f", "argu', 'cut <tool_call>{"name": "f", "argu', []),
    ("hermes", "less < than <tool_ and more", "less < than <tool_ and more", []),
    ("llama3_json", f'{{"name": "get_weather", "parameters": {WEATHER}}}', "", [("get_weather", WEATHER)]),
    (
        "llama3_json",
        f'<|python_tag|>{{"name": "a", "parameters": {TRICKY}}}; {{"name": "b", "parameters": {{}}}}',
        "",
        [("a", TRICKY), ("b", "{}")],
    ),
    ("llama3_json", "  The answer is {x}.", "  The answer is {x}.", []),
    ("llama3_json", '{"answer": 42}', '{"answer": 42}', []),
    ("llama3_json", '\n{"name": "f", "arguments": {"n": -1.5e3}}', "", [("f", '{"n": -1.5e3}')]),
    ("mistral", f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {WEATHER}}}]', "", [("get_weather", WEATHER)]),
    (
        "mistral",
        f'Calling.[TOOL_CALLS] [{{"name": "a", "arguments": {TRICKY}}}, {{"name": "b", "arguments": {{}}}}]',
        "Calling.",
        [("a", TRICKY), ("b", "{}")],
    ),
    (
        "mistral",
        f"[TOOL_CALLS]get_weather[ARGS]{WEATHER}[TOOL_CALLS]b[ARGS]{{}}",
        "",
        [("get_weather", WEATHER), ("b", "{}")],
    ),
    ("mistral", "No [TOOL calls here]", "No [TOOL calls here]", []),
]


def every_cut(text: str) -> list[list[str]]:
    """The text whole, cut in two at every position, in three at every pair, and one character at a time."""
    cuts = [[text]] + [[text[:i], text[i:]] for i in range(1, len(text))] + [list(text)]
    step = max(1, len(text) // 12)
    cuts += [[text[:i], text[i:j], text[j:]] for i in range(1, len(text), step) for j in range(i + 1, len(text), step)]
    return cuts


def run(fmt: str, pieces: list[str]) -> tuple[str, list[dict[str, Any]]]:
    parser = get_parser(fmt)
    content, deltas = "", []
    for piece in pieces:
        out = parser.feed(piece)
        content += out.content
        deltas += out.calls
    out = parser.flush()
    return content + out.content, deltas + out.calls


def merge(deltas: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The calls the deltas describe, checking they come as OpenAI streams them."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        index = delta["index"]
        if index not in calls:
            # the first delta of a call: id, type and the whole name, arguments start empty or with a fragment
            assert delta["id"].startswith("call_") and delta["type"] == "function", delta
            assert delta["function"]["name"], delta
            calls[index] = {"name": delta["function"]["name"], "arguments": delta["function"]["arguments"]}
            assert index == len(calls) - 1, "calls are numbered from 0 in order"
        else:
            assert set(delta) == {"index", "function"} and set(delta["function"]) == {"arguments"}, delta
            calls[index]["arguments"] += delta["function"]["arguments"]
    return [(c["name"], c["arguments"]) for _, c in sorted(calls.items())]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_parsers_give_the_same_result_wherever_the_output_is_cut(
    fmt: str, text: str, content: str, calls: list[tuple[str, str]]
) -> None:
    for pieces in every_cut(text):
        got_content, deltas = run(fmt, pieces)
        assert (got_content, merge(deltas)) == (content, calls), pieces
        for _, arguments in merge(deltas):
            json.loads(arguments)  # every call's arguments are valid JSON


def test_arguments_stream_before_the_call_ends() -> None:
    parser = get_parser("hermes")
    first = parser.feed('<tool_call>{"name": "f", "arguments": {"text": "a long')
    assert first.calls[0]["function"] == {"name": "f", "arguments": ""}
    assert first.calls[1] == {"index": 0, "function": {"arguments": '{"text": "a long'}}
    more = parser.feed(' answer"}}</tool_call>')
    assert more.calls == [{"index": 0, "function": {"arguments": ' answer"}'}}]


def test_registry_names_every_format() -> None:
    assert set(PARSERS) >= {"hermes", "llama3_json", "mistral"}
    with pytest.raises(KeyError, match="known: hermes"):
        get_parser("nope")
