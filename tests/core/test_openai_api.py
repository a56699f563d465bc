"""A real `xinf serve` driven with the real openai client."""

from __future__ import annotations

import json

import openai
import pytest

from xinf.testing.server import ServerProcess


@pytest.fixture
def chat_server(server: ServerProcess) -> ServerProcess:
    server.launch(model_name="xinf-test-chat", replica=2)
    return server


def test_chat_answers_with_usage(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    reply = client.chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "hello there"}], max_tokens=5
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert len(reply.choices[0].message.content.split()) == 5
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == 7


def test_stream_structure(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    chunks = list(
        client.chat.completions.create(
            model="xinf-test-chat",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    choice_chunks = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in choice_chunks[:-1]] == [None] * (len(choice_chunks) - 1)
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    assert len(text.split()) == 4


def test_completions(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    reply = client.completions.create(model="xinf-test-chat", prompt="one two three", max_tokens=3)
    assert reply.object == "text_completion"
    assert len(reply.choices[0].text.split()) == 3
    assert reply.usage.prompt_tokens == 3


def test_stop_and_seed_and_n(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    msgs = [{"role": "user", "content": "tell me"}]
    full = client.chat.completions.create(model="xinf-test-chat", messages=msgs, max_tokens=6, seed=3)
    again = client.chat.completions.create(model="xinf-test-chat", messages=msgs, max_tokens=6, seed=3)
    assert full.choices[0].message.content == again.choices[0].message.content
    words = full.choices[0].message.content.split()
    cut = client.chat.completions.create(model="xinf-test-chat", messages=msgs, max_tokens=6, seed=3, stop=[words[2]])
    assert cut.choices[0].message.content == " ".join(words[:2]) + " "
    assert cut.choices[0].finish_reason == "stop"
    many = client.chat.completions.create(model="xinf-test-chat", messages=msgs, max_tokens=2, n=3, seed=1)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert many.usage.completion_tokens == 6


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [], "max_tokens": 3}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}], "frobnicate": 1}, "frobnicate"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**30}, "max_tokens"),
    ],
)
def test_bad_input_is_400_with_openai_error(chat_server: ServerProcess, body: dict, param: str) -> None:
    response = chat_server.http.post("/v1/chat/completions", json={"model": "xinf-test-chat", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_malformed_json_and_unknown_model(chat_server: ServerProcess) -> None:
    as_json = {"content-type": "application/json"}  # without it: 415 (tests/security/test_trust.py)
    response = chat_server.http.post("/v1/chat/completions", content=b"{not json", headers=as_json)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = chat_server.http.post("/v1/chat/completions", content=b"\xff\xfe", headers=as_json)
    assert response.status_code == 400
    client = chat_server.openai()
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in str(info.value)


def test_context_overflow_is_400(chat_server: ServerProcess) -> None:
    client = chat_server.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="xinf-test-chat", messages=[{"role": "user", "content": "w " * 3000}])
    assert info.value.body["code"] == "context_length_exceeded"


SCRIPTS = [
    ("<think>Paris is in France.</think>\n\nParis.", [3, 1, 5]),
    ("<think>Paris is in France.</think>\n\nParis.", [1]),
    ("Paris is in France.</think>Paris.", [4, 2]),  # the template opened the block
]


@pytest.mark.parametrize(("script", "chunks"), SCRIPTS)
def test_reasoning_is_split_from_the_answer_while_streaming(server: ServerProcess, script: str, chunks: list) -> None:
    server.launch(model_name="xinf-test-reasoning", script=script, chunks=chunks)
    client = server.openai()
    msgs = [{"role": "user", "content": "capital of France?"}]
    stream = client.chat.completions.create(model="xinf-test-reasoning", messages=msgs, stream=True, max_tokens=500)
    reasoning, content = "", ""
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert (reasoning, content) == ("Paris is in France.", "Paris.")
    whole = client.chat.completions.create(model="xinf-test-reasoning", messages=msgs, max_tokens=500)
    assert whole.choices[0].message.content == "Paris."
    assert whole.choices[0].message.reasoning_content == "Paris is in France."


def test_thinking_off_keeps_thoughts_out_of_content(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-reasoning", script="<think>hidden</think>\n\nshown", chunks=[2])
    client = server.openai()
    msgs = [{"role": "user", "content": "x"}]
    for extra in ({"enable_thinking": False}, {"chat_template_kwargs": {"enable_thinking": False}}):
        reply = client.chat.completions.create(model="xinf-test-reasoning", messages=msgs, extra_body=extra)
        assert reply.choices[0].message.content == "shown"
        assert reply.choices[0].message.reasoning_content is None


def test_thinking_off_at_launch_is_the_default_for_requests(server: ServerProcess) -> None:
    server.launch(
        model_name="xinf-test-reasoning", enable_thinking=False, script="<think>hidden</think>shown", chunks=[3]
    )
    reply = server.openai().chat.completions.create(
        model="xinf-test-reasoning", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "shown"
    refused = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "enable_thinking": True})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "enable_thinking"


def test_embeddings_float_and_base64(server: ServerProcess) -> None:
    import base64
    import struct

    server.launch(model_name="xinf-test-embed")
    client = server.openai()
    result = client.embeddings.create(model="xinf-test-embed", input=["a cat", "a dog"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 4
    raw = server.http.post(
        "/v1/embeddings", json={"model": "xinf-test-embed", "input": "a cat", "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert decoded == pytest.approx(result.data[0].embedding, rel=1e-6)
    bad = server.http.post("/v1/embeddings", json={"model": "xinf-test-embed", "input": [""]})
    assert bad.status_code == 400
    chat = server.http.post(
        "/v1/chat/completions", json={"model": "xinf-test-embed", "messages": [{"role": "user", "content": "x"}]}
    )
    assert chat.status_code == 400 and "cannot chat" in chat.json()["error"]["message"]


def test_streamed_error_before_output_gets_a_status(chat_server: ServerProcess) -> None:
    response = chat_server.http.post(
        "/v1/chat/completions",
        json={
            "model": "xinf-test-chat",
            "stream": True,
            "messages": [{"role": "user", "content": "w " * 3000}],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_failure_mid_stream_is_an_error_event(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", fail_after=2)
    with server.http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "xinf-test-chat", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])["error"]
    assert "injected failure after 2 chunks" in error["message"] and error["type"] == "server_error"


def test_unknown_route_and_method_are_json(server: ServerProcess) -> None:
    response = server.http.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "route_not_found"
    response = server.http.put("/v1/models")
    assert response.status_code == 405 and "error" in response.json()


def test_openapi_document_describes_the_routes(server: ServerProcess) -> None:
    doc = server.http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat == {"$ref": "#/components/schemas/ChatRequest"}
    assert "messages" in doc["components"]["schemas"]["ChatRequest"]["required"]
