"""SmolLM2 replicas on placed CPU cores, and a launch too big for host memory, behind a real `xinf serve`.

Three replicas get one core each (``XINF_CPU_CORES_PER_REPLICA=1``).  On a
machine with fewer than three cores the server simulates three: the placement
still gives disjoint sets, and the replicas pin to real core ``c mod n``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.cores import parse_ranges
from xinf.testing.server import ServerProcess

REAL = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SIMULATED = len(REAL) < 3
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is a Linux API")


def allowed(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_ranges(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XINF_CPU_CORES_PER_REPLICA": "1"}
    if SIMULATED:
        env["XINF_SIMULATED_CPU_CORES"] = "3"
    with ServerProcess(tmp_path_factory.mktemp("llamacpp-cores"), env=env) as server:
        yield server


def test_three_replicas_pin_to_disjoint_cores_and_run_that_many_threads(server: ServerProcess) -> None:
    server.launch(model_name="smollm2-instruct", model_uid="smol", replica=3, n_ctx=512, n_parallel=1)
    replicas = server.http.get("/v1/models/smol").json()["replicas"]
    sets = [r["cores"] for r in replicas]
    assert len(sets) == 3 and all(len(s) == 1 for s in sets)
    assert len({c for s in sets for c in s}) == 3  # disjoint in the placement
    pinned = [allowed(r["pid"]) for r in replicas]
    assert pinned == [r["cpus"] for r in replicas]
    assert pinned == [[c if c in REAL else REAL[c % len(REAL)] for c in s] for s in sets]
    if not SIMULATED:
        assert len({c for p in pinned for c in p}) == 3  # disjoint on the machine too
    for r in replicas:
        assert r["threads"] == 1
        log = Path(r["log"]).read_text()
        # llama.cpp's own account of its thread pools
        assert re.search(r"threadpool init, n_threads = 1\n", log), log[-2000:]
    reply = server.openai().chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=8
    )
    assert reply.choices[0].message.content


def test_the_n_threads_option_wins_over_the_core_set(server: ServerProcess) -> None:
    server.launch(model_name="smollm2-instruct", model_uid="opt", n_ctx=512, n_parallel=1, n_threads=2)
    [replica] = server.http.get("/v1/models/opt").json()["replicas"]
    assert len(replica["cores"]) == 1 and replica["threads"] == 2
    assert "threadpool init, n_threads = 2\n" in Path(replica["log"]).read_text()
    server.http.delete("/v1/models/opt")


def test_an_option_that_explodes_the_estimate_is_a_400_naming_the_memory(server: ServerProcess) -> None:
    body = {"model_name": "smollm2-instruct", "model_uid": "huge", "n_ctx": 1_000_000_000}
    response = server.http.post("/v1/models", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "insufficient_host_memory"
    message = error["message"]
    assert re.search(r"needs [0-9.]+ TiB of host memory \(RAM\) on this machine, but only [0-9.]+ GiB is free", message)
    assert "KV cache" in message and "n_ctx 1000000000" in message
    assert "huge" not in [m["id"] for m in server.http.get("/v1/models").json()["data"]]
    command = [sys.executable, "-m", "xinf.cli.main", "launch", "-n", "smollm2-instruct", "--n_ctx", "1000000000"]
    dry = subprocess.run(
        [*command, "--dry-run", "-e", server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 1 and "TiB of host memory" in dry.stderr


def test_a_set_that_is_the_whole_machine_leaves_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from xinf_llamacpp.options import placed_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [placed_threads(n) for n in (None, 1, 2, 7, 8)] == [None, 1, 2, 7, 7]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert placed_threads(1) == 1
