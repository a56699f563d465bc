"""OpenAI details clients rely on: request ids, fingerprints, parameter combinations OpenAI refuses."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from xinf.testing.server import ServerProcess

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("parity")) as server:
        server.launch(model_name="xinf-test-chat", model_uid="chat")
        server.launch(model_name="xinf-test-embed", model_uid="embed")
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    client = server.openai()
    yield client
    client.close()


def test_every_response_has_an_x_request_id(server: ServerProcess) -> None:
    given = server.http.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": HELLO, "max_tokens": 2},
        headers={"X-Request-Id": "trace-42"},
    )
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42"
    made = [server.http.get("/v1/models"), server.http.get("/no/such/route"), server.http.get("/health")]
    ids = [r.headers["x-request-id"] for r in made]
    assert all(i.startswith("req_") for i in ids) and len(set(ids)) == 3
    odd = server.http.get("/health", headers={"X-Request-Id": "bad id\twith spaces"})
    assert odd.headers["x-request-id"].startswith("req_")  # never echoed when it could break a header or a log


def test_the_openai_client_sees_the_request_id_and_a_fingerprint(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO, max_tokens=2)
    assert raw.headers["x-request-id"].startswith("req_")
    reply = raw.parse()
    assert reply.system_fingerprint and reply.system_fingerprint.startswith("fp_")
    stream = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=2, stream=True)
    assert {c.system_fingerprint for c in stream} == {reply.system_fingerprint}
    completion = client.completions.create(model="chat", prompt="one two", max_tokens=2)
    assert completion.system_fingerprint == reply.system_fingerprint


def test_stream_options_without_stream_is_a_400(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=2, stream_options={"include_usage": True}
        ),
        lambda: client.completions.create(
            model="chat", prompt="hi", max_tokens=2, stream_options={"include_usage": True}
        ),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            call()
        assert info.value.body["param"] == "stream_options"


def test_suffix_is_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="chat", prompt="def f(", suffix="return 1", max_tokens=2)
    assert info.value.body["param"] == "suffix"


def test_token_id_prompts_and_lists_of_prompts(client: openai.OpenAI) -> None:
    one = client.completions.create(model="chat", prompt=[5, 6, 7], max_tokens=2)
    assert one.usage.prompt_tokens == 3 and len(one.choices) == 1
    many = client.completions.create(model="chat", prompt=[[1, 2], [3, 4, 5, 6]], max_tokens=2)
    assert [c.index for c in many.choices] == [0, 1] and many.usage.prompt_tokens == 6
    mixed = client.completions.create(model="chat", prompt=["one two three", [9]], max_tokens=2)
    assert mixed.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="chat", prompt=[[1, 2], [-3]], max_tokens=2)
    assert info.value.body["param"] == "prompt" and "prompt[1]" in info.value.body["message"]


def test_echo_with_logprobs_puts_the_prompt_first_with_a_null_logprob(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="chat", prompt="the quick fox", max_tokens=2, echo=True, logprobs=1)
    choice = reply.choices[0]
    assert choice.text.startswith("the quick fox")
    lp = choice.logprobs
    assert lp.tokens[:3] == ["the", " quick", " fox"] and len(lp.tokens) == 5
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None for v in lp.token_logprobs[1:])
    assert lp.text_offset[:3] == [0, 3, 9]


def test_max_tokens_0_with_echo_scores_the_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="chat", prompt="score this text", max_tokens=0, echo=True, logprobs=0)
    choice = reply.choices[0]
    assert choice.text == "score this text" and choice.finish_reason == "length"
    assert choice.logprobs.tokens == ["score", " this", " text"]
    assert reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 0
    stream = client.completions.create(model="chat", prompt=[4, 5], max_tokens=0, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "t4 t5"  # a token-id prompt's text
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="chat", prompt="no echo", max_tokens=0)
    assert info.value.body["param"] == "max_tokens"


def test_embeddings_take_token_ids_and_dimensions_where_the_model_has_them(client: openai.OpenAI) -> None:
    ids = client.embeddings.create(model="embed", input=[[1, 2, 3], [4]])
    assert len(ids.data) == 2 and ids.usage.prompt_tokens == 4
    assert client.embeddings.create(model="embed", input=[1, 2, 3]).data[0].embedding == ids.data[0].embedding
    short = client.embeddings.create(model="embed", input="hello", dimensions=4)  # the test model is matryoshka
    assert len(short.data[0].embedding) == 4
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="embed", input=[["mixed", 1]])  # type: ignore[list-item]
    assert info.value.body["param"] == "input"


def test_an_image_to_a_text_model_is_a_400_naming_it(server: ServerProcess, client: openai.OpenAI) -> None:
    """The same check (xinf.server.limits) for the OpenAI and the Anthropic routes."""
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
    url = {"url": f"data:image/png;base64,{pixel}"}
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": url}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": image}], max_tokens=2)
    assert "model chat has no vision ability" in info.value.body["message"]
    source = {"type": "base64", "media_type": "image/png", "data": pixel}
    anthropic_image = [{"type": "image", "source": source}, {"type": "text", "text": "what is this?"}]
    answer = server.http.post(
        "/v1/messages",
        json={"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": anthropic_image}]},
    )
    assert answer.status_code == 400 and "model chat has no vision ability" in answer.json()["error"]["message"]
    text_parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": text_parts}], max_tokens=2
    )
    assert reply.usage.prompt_tokens == 2
