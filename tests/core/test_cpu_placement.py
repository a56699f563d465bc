"""Cores and host memory end to end: real replica processes pinned to (simulated) cores, memory-checked launches.

The server simulates 6 cores and 1 GiB of host memory; replicas pin themselves
to the real CPUs the simulated cores map onto (core c -> real core c mod n).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.cores import parse_ranges
from xinf.testing.server import ServerProcess

REAL = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is a Linux API")


def real(cores: list[int]) -> list[int]:
    """The real CPUs simulated cores are pinned to."""
    return sorted({c if c in REAL else REAL[c % len(REAL)] for c in cores})


def allowed(pid: int) -> list[int]:
    """What the kernel lets a process run on."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_ranges(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list")


def xinf(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args, "-e", server.url], capture_output=True, text=True, timeout=120
    )


def wait_for(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XINF_SIMULATED_CPU_CORES": "6", "XINF_SIMULATED_HOST_MEMORY": "1GiB"}
    with ServerProcess(tmp_path_factory.mktemp("cores"), env=env) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(server: ServerProcess) -> Iterator[None]:
    yield
    for model in server.http.get("/v1/models").json()["data"]:
        server.http.delete(f"/v1/models/{model['id']}")


def chat(server: ServerProcess, uid: str) -> str:
    reply = server.openai().chat.completions.create(
        model=uid, messages=[{"role": "user", "content": "x"}], max_tokens=50
    )
    return str(reply.choices[0].message.content)


def test_three_replicas_get_disjoint_cores_and_pin_themselves(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="m", replica=3, script_env="OMP_NUM_THREADS")
    replicas = server.http.get("/v1/models/m").json()["replicas"]
    assert [r["cores"] for r in replicas] == [[0, 1], [2, 3], [4, 5]]
    for r in replicas:
        assert r["cpus"] == real(r["cores"]) == allowed(r["pid"])
        assert r["threads"] == 2 and r["host_memory"] == 64 << 20
    # The OpenMP pool is sized to the set, unless the server's environment says otherwise.
    assert chat(server, "m") == f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}"
    table = xinf(server, "list").stdout.splitlines()
    assert table[0].split()[7] == "CORES" and "0-1 | 2-3 | 4-5" in table[1]
    devices = server.http.get("/v1/cluster/devices").json()
    assert devices["cpu_count"] == 6 and devices["memory_reserved"] == 3 * (64 << 20)
    assert devices["cores_held"] == {"m/0": [0, 1], "m/1": [2, 3], "m/2": [4, 5]}


def test_env_wins_and_terminate_releases_the_cores(server: ServerProcess) -> None:
    server.launch(
        model_name="xinf-test-chat", model_uid="a", envs={"OMP_NUM_THREADS": "7"}, script_env="OMP_NUM_THREADS"
    )
    assert server.http.get("/v1/models/a").json()["replicas"][0]["cores"] == [0, 1, 2, 3, 4, 5]
    assert chat(server, "a") == "OMP_NUM_THREADS=7"
    # Every core is taken: a dry run shows the next launch sharing them, and its host memory.
    out = xinf(server, "launch", "-n", "xinf-test-chat", "-u", "b", "-r", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[-4:] == ["HOST", "MEMORY", "CORES", "ESTIMATE"]
    rows = [line.split()[:7] for line in lines[2:]]
    assert rows == [["0", "CPU", "-", "-", "64.00", "MiB", "0-2"], ["1", "CPU", "-", "-", "64.00", "MiB", "3-5"]]
    server.http.delete("/v1/models/a")
    devices = server.http.get("/v1/cluster/devices").json()
    assert devices["cores_held"] == {} and devices["memory_reserved"] == 0


def test_a_launch_that_does_not_fit_in_host_memory_is_a_400_naming_it(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="small", host_memory=600 << 20)
    body = {"model_name": "xinf-test-chat", "model_uid": "big", "host_memory": 500 << 20}
    response = server.http.post("/v1/models", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "insufficient_host_memory"
    assert (
        "replica 0 of big needs 500.00 MiB of host memory (RAM) on this machine, but only 424.00 MiB is free"
        in (error["message"])
    )
    dry = server.http.post("/v1/models", params={"dry_run": "true"}, json=body)
    assert dry.status_code == 400 and dry.json()["error"]["message"] == error["message"]
    assert [m["id"] for m in server.http.get("/v1/models").json()["data"]] == ["small"]


def test_a_restarted_replica_gets_its_cores_back(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="c", replica=2, crash_after=1)
    before = server.http.get("/v1/models/c").json()["replicas"]
    with pytest.raises(Exception):  # noqa: B017 - the crash ends the stream with an error
        chat(server, "c")

    def restarted() -> list[dict] | None:  # type: ignore[type-arg]
        now = server.http.get("/v1/models/c").json()["replicas"]
        moved = [r for r, b in zip(now, before) if r["pid"] != b["pid"]]
        return now if moved and all(r["status"] == "ready" for r in now) else None

    after = wait_for(restarted)
    assert [r["cores"] for r in after] == [r["cores"] for r in before] == [[0, 1, 2], [3, 4, 5]]
    for r in after:
        assert allowed(r["pid"]) == real(r["cores"])
