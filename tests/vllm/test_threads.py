"""vLLM-CPU's OpenMP threads follow the replica's placed cores; the user's VLLM_CPU_OMP_THREADS_BIND wins."""

from __future__ import annotations

import os

import pytest

from xinf.cores import ranges
from xinf.types import Placement
from xinf_vllm.engine import bind_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is a Linux API")


def test_the_bind_is_the_cpus_the_replica_is_pinned_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    pinned = os.sched_getaffinity(0)  # the replica pins itself before load; here: this process's CPUs
    assert bind_threads(Placement(cores=[0])) == len(pinned)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == ranges(pinned)


def test_without_placed_cores_vllm_binds_as_it_likes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert bind_threads(Placement()) is None
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


@pytest.mark.parametrize(("given", "threads"), [("2-3", 2), ("0-3|4-7", 4), ("nobind", None), ("auto", None)])
def test_the_users_bind_wins(monkeypatch: pytest.MonkeyPatch, given: str, threads: int | None) -> None:
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", given)
    assert bind_threads(Placement(cores=[0])) == threads
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == given
