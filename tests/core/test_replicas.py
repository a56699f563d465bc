"""Replica processes: crashes reach clients as clean errors, replicas come back, env is per model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai
import pytest

from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def replicas(server: ServerProcess, uid: str) -> list[dict]:
    return server.http.get(f"/v1/models/{uid}").json()["replicas"]


def test_killed_replica_mid_stream_errors_then_recovers(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", replica=2, token_delay=0.05)
    client = server.openai()
    stream = client.chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "go"}], max_tokens=500, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 3:
                busy = [r for r in replicas(server, "xinf-test-chat") if r["inflight"]]
                assert len(busy) == 1
                victim = busy[0]
                os.kill(victim["pid"], signal.SIGKILL)
    assert len(received) >= 3
    assert "stopped while generating" in str(info.value)

    # The other replica answers meanwhile; the killed one is restarted with a new process.
    reply = client.chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "again"}], max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
    fresh = wait_for(
        lambda: (
            (rs := replicas(server, "xinf-test-chat"))[victim["index"]]["status"] == "ready"
            and rs[victim["index"]]["pid"] != victim["pid"]
            and rs
        )
    )
    assert all(r["status"] == "ready" for r in fresh)


def test_replica_dying_before_output_gives_503_and_restarts_are_capped(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", crash_after=0)
    client = server.openai()
    for _ in range(10):
        wait_for(
            lambda: (
                (m := server.http.get("/v1/models/xinf-test-chat").json())["status"] == "failed"
                or m["replicas"][0]["status"] == "ready"
            )
        )
        model = server.http.get("/v1/models/xinf-test-chat").json()
        if model["status"] == "failed":
            break
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="xinf-test-chat", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 503
    model = server.http.get("/v1/models/xinf-test-chat").json()
    assert model["status"] == "failed"
    assert "crashed 6 times" in model["error"] and "gave up after 5 restarts" in model["error"]
    response = server.http.post(
        "/v1/chat/completions", json={"model": "xinf-test-chat", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


def test_env_reaches_only_that_models_replicas(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="a", envs={"XINF_MARK": "red"}, script_env="XINF_MARK")
    server.launch(model_name="xinf-test-chat", model_uid="b", script_env="XINF_MARK")
    client = server.openai()

    def say(uid: str) -> str:
        reply = client.chat.completions.create(model=uid, messages=[{"role": "user", "content": "?"}], max_tokens=50)
        return reply.choices[0].message.content

    assert say("a") == "XINF_MARK=red"
    assert say("b") == "XINF_MARK=<unset>"


def test_terminate_and_shutdown_stop_the_processes(start_server) -> None:
    server: ServerProcess = start_server()
    server.launch(model_name="xinf-test-chat", model_uid="one", replica=2)
    server.launch(model_name="xinf-test-chat", model_uid="two")
    one = [r["pid"] for r in replicas(server, "one")]
    two = [r["pid"] for r in replicas(server, "two")]
    assert server.http.delete("/v1/models/one").status_code == 200
    wait_for(lambda: not any(alive(pid) for pid in one))
    assert server.http.get("/v1/models/one").status_code == 404
    assert all(alive(pid) for pid in two)
    server.stop()
    wait_for(lambda: not any(alive(pid) for pid in two), timeout=20)


def test_spawned_workers_can_import_the_replica_module() -> None:
    # multiprocessing's spawn re-runs the parent's main module as __mp_main__ in each worker
    code = "import runpy; runpy.run_module('xinf.replica', run_name='__mp_main__'); print('imported')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "imported")
