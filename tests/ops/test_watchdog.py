"""The progress watchdog, the request deadline, the launch timeout, and what a killed replica's clients see."""

from __future__ import annotations

import json
import os
import signal
import time

from xinf.storage import sweep
from xinf.testing.server import ServerProcess

CHAT = "/v1/chat/completions"


def body(**extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "go"}], **extra}


def wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def events(server: ServerProcess, payload: dict) -> list[dict]:
    with server.http.stream("POST", CHAT, json={**payload, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_stalled_replica_is_restarted(start_server) -> None:
    server: ServerProcess = start_server(env={"XINF_STALL_TIMEOUT": "2", "XINFERENCE_HEALTH_CHECK_INTERVAL": "1"})
    # stall_after: the engine stops producing but keeps answering pings, so only the watchdog sees it.
    server.launch(model_name="xinf-test-chat", model_uid="m", stall_after=2)
    first_pid = server.http.get("/v1/models/m").json()["replicas"][0]["pid"]
    got = events(server, body(max_tokens=10))
    error = got[-1]["error"]
    assert "made no progress for" in error["message"] and "XINF_STALL_TIMEOUT=2" in error["message"]
    assert "None" not in error["message"]
    wait_until(lambda: server.http.get("/v1/models/m").json()["replicas"][0]["status"] == "ready")
    described = server.http.get("/v1/models/m").json()
    assert described["status"] == "ready" and described["replicas"][0]["pid"] != first_pid
    metrics = server.http.get("/metrics").text
    assert 'xinf_replica_stalls_total{model="m",replica="0"} 1.0' in metrics
    assert 'xinf_replica_restarts_total{model="m",replica="0"} 1.0' in metrics
    # The fresh replica serves (up to its own stall, which the watchdog catches again).
    reply = server.http.post(CHAT, json=body(max_tokens=2))
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2


def test_request_deadline_and_launch_timeout(start_server) -> None:
    server: ServerProcess = start_server(env={"XINF_REQUEST_TIMEOUT": "1", "XINF_LAUNCH_TIMEOUT": "2"})
    server.launch(model_name="xinf-test-chat", model_uid="m", token_delay=0.2)
    late = server.http.post(CHAT, json=body(max_tokens=50))
    assert late.status_code == 504
    assert "XINF_REQUEST_TIMEOUT" in late.json()["error"]["message"]
    assert server.http.post(CHAT, json=body(max_tokens=2)).status_code == 200
    slow = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "model_uid": "slow", "load_delay": 30})
    assert slow.status_code == 400
    assert "did not load within 2s (XINF_LAUNCH_TIMEOUT)" in slow.json()["error"]["message"]
    assert "slow" not in [m["id"] for m in server.http.get("/v1/models").json()["data"]]


def test_a_killed_replica_is_named_and_its_model_is_not_ready(start_server) -> None:
    server: ServerProcess = start_server()
    server.launch(model_name="xinf-test-chat", model_uid="m", token_delay=0.05, load_delay=1.5)
    pid = server.http.get("/v1/models/m").json()["replicas"][0]["pid"]
    with server.http.stream("POST", CHAT, json=body(max_tokens=500, stream=True)) as response:
        lines = response.iter_lines()
        next(line for line in lines if '"content":"' in line and '"content":""' not in line)
        os.kill(pid, signal.SIGKILL)
        rest = [line[6:] for line in lines if line.startswith("data: ")]
    error = json.loads(rest[-2])["error"]
    assert "was killed by SIGKILL" in error["message"] and "None" not in error["message"]
    # While its only replica restarts (load_delay keeps it loading), the model is not "ready".
    described = server.http.get("/v1/models/m").json()
    assert described["replicas"][0]["status"] != "ready"
    assert described["status"] == "restarting"
    wait_until(lambda: server.http.get("/v1/models/m").json()["status"] == "ready")


def test_interrupted_writes_leave_no_temporaries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    registrations = home / "registrations" / "LLM"
    registrations.mkdir(parents=True)
    stale = registrations / ".mine.json.abc123.tmp"
    stale.write_text("{half")
    fresh = registrations / ".other.json.def456.tmp"
    fresh.write_text("{being written")
    building = home / "virtualenvs" / ".llama.cpp-0123.4242.tmp"
    (building / "bin").mkdir(parents=True)
    old = time.time() - 7200
    for path in (stale, building):
        os.utime(path, (old, old))
    kept = registrations / "mine.json"
    kept.write_text("{}")
    assert sweep(home) == 2
    assert not stale.exists() and not building.exists()
    assert fresh.exists() and kept.exists()  # a write that may still be running, and real files, stay
