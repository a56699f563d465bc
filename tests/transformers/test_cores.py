"""torch's threads follow the replica's placed cores, behind a real `xinf serve`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.cores import parse_ranges
from xinf.testing.server import ServerProcess

REAL = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is a Linux API")


def allowed(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_ranges(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Two simulated cores for each of two replicas: torch runs two threads in each, on the real CPUs they map to.
    env = {"XINF_SIMULATED_CPU_CORES": "4"}
    with ServerProcess(tmp_path_factory.mktemp("transformers-cores"), env=env) as server:
        yield server


def test_torch_threads_match_the_core_set(server: ServerProcess, qwen3_path: Path) -> None:
    server.launch(
        model_path=str(qwen3_path), model_uid="placed", model_engine="transformers", max_num_seqs=2, replica=2
    )
    replicas = server.http.get("/v1/models/placed").json()["replicas"]
    assert [r["cores"] for r in replicas] == [[0, 1], [2, 3]]
    for r in replicas:
        assert r["threads"] == 2
        assert allowed(r["pid"]) == r["cpus"] == sorted({c if c in REAL else REAL[c % len(REAL)] for c in r["cores"]})
