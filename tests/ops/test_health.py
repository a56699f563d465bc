"""Replica health checks: at start-up, and replicas that hang with their process alive."""

from __future__ import annotations

import httpx
import openai
import pytest

from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for

FAST = {
    "XINFERENCE_HEALTH_CHECK_INTERVAL": "0.2",
    "XINFERENCE_HEALTH_CHECK_TIMEOUT": "0.5",
    "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD": "2",
}


def ask(server: ServerProcess, model: str, max_tokens: int):  # type: ignore[no-untyped-def]
    with server.openai() as client:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], max_tokens=max_tokens
        )


def test_replica_that_never_answers_fails_the_launch_with_its_log(start_server) -> None:
    server: ServerProcess = start_server(env=FAST)
    response = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "hang_on_start": 30})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("replica 0 of xinf-test-chat: loaded but failed 2 health check(s)")
    assert "--- last lines of" in message and "replica ready: xinf-test-chat on engine test" in message
    assert server.http.get("/v1/models").json()["data"] == []  # never served, not listed
    assert "did not answer health check 1/2" in server.log()


def test_health_check_can_be_disabled(start_server) -> None:
    server: ServerProcess = start_server(env={**FAST, "XINFERENCE_DISABLE_HEALTH_CHECK": "1"})
    # The replica is unresponsive for 3 s after loading; unchecked, the launch succeeds at once.
    server.launch(model_name="xinf-test-chat", hang_on_start=3)
    model = server.http.get("/v1/models/xinf-test-chat").json()
    assert model["status"] == "ready"
    reply = ask(server, "xinf-test-chat", 1)
    assert reply.choices[0].finish_reason == "length"
    assert "health check" not in server.log()


def test_hung_replica_is_restarted(start_server) -> None:
    server: ServerProcess = start_server(env=FAST)
    server.launch(model_name="xinf-test-chat", model_uid="h", hang_after=2)
    before = server.http.get("/v1/models/h").json()["replicas"][0]
    client = server.openai()
    received = []
    with pytest.raises(openai.APIError) as info:
        with client.chat.completions.create(
            model="h", messages=[{"role": "user", "content": "x"}], max_tokens=10, stream=True
        ) as stream:
            for chunk in stream:  # two chunks, then the engine hangs; the health check kills it
                received.append(chunk)
    client.close()
    assert "stopped while generating" in str(info.value)
    assert len(received) >= 2

    def restarted() -> dict | None:
        replica = server.http.get("/v1/models/h").json()["replicas"][0]
        return replica if replica["status"] == "ready" and replica["pid"] != before["pid"] else None

    after = wait_for(restarted)
    assert after["index"] == 0
    assert "failed 2 health checks in a row; killing it so it restarts" in server.log()
    reply = ask(server, "h", 2)
    assert reply.usage.completion_tokens == 2
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'xinf_replica_restarts_total{model="h",replica="0"} 1.0' in metrics


def test_busy_replica_is_not_mistaken_for_a_hung_one(start_server) -> None:
    # Slow tokens are awaited, not blocking: the replica keeps answering pings while it works.
    server: ServerProcess = start_server(env=FAST)
    server.launch(model_name="xinf-test-chat", model_uid="busy", token_delay=0.3)
    pid = server.http.get("/v1/models/busy").json()["replicas"][0]["pid"]
    reply = ask(server, "busy", 8)
    assert reply.usage.completion_tokens == 8
    assert server.http.get("/v1/models/busy").json()["replicas"][0]["pid"] == pid
    assert "did not answer a health check" not in server.log()
