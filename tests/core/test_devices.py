"""Placement end to end: a simulated inventory, real replica processes, real CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest

from xinf.testing.server import ServerProcess

GiB = 1 << 30


def xinf(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args, "-e", server.url], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def gpu_server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server(env={"XINF_SIMULATED_GPUS": "24GiB,24GiB"})


def test_each_replica_sees_only_its_device(gpu_server: ServerProcess) -> None:
    gpu_server.launch(model_name="xinf-test-chat", replica=3, vram=8 * GiB, script_env="CUDA_VISIBLE_DEVICES")
    described = gpu_server.http.get("/v1/models/xinf-test-chat").json()["replicas"]
    assert [r["devices"] for r in described] == [[0], [1], [0]]
    client = gpu_server.openai()
    seen = Counter(
        client.chat.completions.create(
            model="xinf-test-chat", messages=[{"role": "user", "content": "where?"}], max_tokens=50
        )
        .choices[0]
        .message.content
        for _ in range(3)
    )
    assert seen == {"CUDA_VISIBLE_DEVICES=0": 2, "CUDA_VISIBLE_DEVICES=1": 1}


def test_devices_show_reservations_until_terminate(gpu_server: ServerProcess) -> None:
    gpu_server.launch(model_name="xinf-test-chat", vram=20 * GiB)
    gpu_server.launch(model_name="xinf-test-chat", model_uid="second", vram=10 * GiB)
    devices = gpu_server.http.get("/v1/cluster/devices").json()["devices"]
    need = 20 * GiB + (96 << 20)  # weights + the test engine's KV cache and overhead
    assert [d["reserved"] for d in devices] == [need, 10 * GiB + (96 << 20)]
    assert devices[0]["replicas"] == ["xinf-test-chat/0"] and devices[1]["replicas"] == ["second/0"]
    table = xinf(gpu_server, "devices").stdout.splitlines()
    assert table[0].split() == ["GPU", "NAME", "TOTAL", "FREE", "RESERVED", "AVAILABLE", "REPLICAS"]
    assert "20.09 GiB" in table[1] and "xinf-test-chat/0" in table[1]
    gpu_server.http.delete("/v1/models/xinf-test-chat")
    devices = gpu_server.http.get("/v1/cluster/devices").json()["devices"]
    assert devices[0]["reserved"] == 0 and devices[0]["available"] == 24 * GiB


def test_a_model_that_fits_nowhere_is_refused_with_the_figures(gpu_server: ServerProcess) -> None:
    response = gpu_server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "vram": 30 * GiB})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "does not fit on any device" in message
    assert "GPU 1 (Simulated GPU 1): 24.00 GiB free, needs 30.09 GiB" in message
    assert gpu_server.http.get("/v1/models").json()["data"] == []


def test_dry_run_prints_the_plan_and_starts_nothing(gpu_server: ServerProcess) -> None:
    out = xinf(gpu_server, "launch", "-n", "xinf-test-chat", "-r", "3", "--dry-run", "--vram", str(8 * GiB))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "xinf-test-chat: xinf-test-chat (test none) on test; nothing started"
    assert lines[1].split() == [
        "REPLICA",
        "DEVICES",
        "RESERVED",
        "GPU",
        "LAYERS",
        "HOST",
        "MEMORY",
        "CORES",
        "ESTIMATE",
    ]
    assert [line.split()[:3] for line in lines[2:]] == [["0", "GPU", "0"], ["1", "GPU", "1"], ["2", "GPU", "0"]]
    assert gpu_server.http.get("/v1/models").json()["data"] == []
    assert gpu_server.http.get("/v1/cluster/devices").json()["devices"][0]["reserved"] == 0


def test_no_sharing_when_multi_replica_is_off(start_server) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(
        env={"XINF_SIMULATED_GPUS": "24GiB,24GiB", "XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU": "0"}
    )
    response = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "replica": 3})
    assert response.status_code == 400 and "unoccupied" in response.json()["error"]["message"]
    server.launch(model_name="xinf-test-chat", replica=2)
    assert [r["devices"] for r in server.http.get("/v1/models/xinf-test-chat").json()["replicas"]] == [[0], [1]]


def test_gpu_idx_pins_replicas(gpu_server: ServerProcess) -> None:
    out = xinf(gpu_server, "launch", "-n", "xinf-test-chat", "-r", "2", "--gpu-idx", "1")
    assert out.returncode == 0, out.stderr
    assert [r["devices"] for r in gpu_server.http.get("/v1/models/xinf-test-chat").json()["replicas"]] == [[1], [1]]


def test_add_and_remove_replicas(gpu_server: ServerProcess) -> None:
    gpu_server.launch(model_name="xinf-test-chat", vram=4 * GiB)
    out = xinf(gpu_server, "add-replica", "xinf-test-chat", "-r", "2")
    assert out.stdout.strip() == "added replica(s) 1, 2 to xinf-test-chat"
    replicas = gpu_server.http.get("/v1/models/xinf-test-chat").json()["replicas"]
    assert [(r["index"], r["devices"], r["status"]) for r in replicas] == [
        (0, [0], "ready"),
        (1, [1], "ready"),
        (2, [0], "ready"),
    ]
    out = xinf(gpu_server, "remove-replica", "xinf-test-chat", "1")
    assert out.stdout.strip() == "removed replica 1 of xinf-test-chat; 2 remain"
    assert gpu_server.http.get("/v1/cluster/devices").json()["devices"][1]["reserved"] == 0
    missing = xinf(gpu_server, "remove-replica", "xinf-test-chat", "7")
    assert missing.returncode == 1 and "has no replica 7 (replicas: 0, 2)" in missing.stderr
    xinference_client = pytest.importorskip("xinference_client")
    client = xinference_client.RESTfulClient(gpu_server.url)
    assert client.add_model_replica("xinf-test-chat")["replicas"] == [3]
    assert client.terminate_model_replica("xinf-test-chat", 0) == 2


def test_a_replica_that_keeps_crashing_releases_its_memory(gpu_server: ServerProcess) -> None:
    gpu_server.launch(model_name="xinf-test-chat", vram=4 * GiB, crash_after=0)
    deadline = time.monotonic() + 90
    while gpu_server.http.get("/v1/models/xinf-test-chat").json()["status"] != "failed":
        assert time.monotonic() < deadline
        gpu_server.http.post(
            "/v1/chat/completions", json={"model": "xinf-test-chat", "messages": [{"role": "user", "content": "x"}]}
        )
        time.sleep(0.2)
    assert gpu_server.http.get("/v1/cluster/devices").json()["devices"][0]["reserved"] == 0
