"""CPU cores and host memory as placement resources: the placement alone, no processes."""

from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import pytest

from xinf.cores import parse_ranges, ranges
from xinf.devices import simulated_devices
from xinf.errors import LaunchError
from xinf.placement import HOST, Ledger, plan
from xinf.types import Device, Hardware, MemoryEstimate, Node

GiB = 1 << 30


def host(cores: int = 6, memory: int = 16 * GiB, gpus: str = "") -> Hardware:
    return Hardware(
        system="Linux", machine="x86_64", cpu_count=cores, cores=list(range(cores)), memory_total=memory,
        memory_available=memory, devices=simulated_devices(gpus) if gpus else [],
    )  # fmt: skip


def needs(host_gib: float, gpu_layers: int | None = None):  # type: ignore[no-untyped-def]
    def estimate(devices: list[Device]) -> MemoryEstimate:
        size = int(host_gib * GiB)
        if devices:  # a GPU replica: the model on the devices, ``host_gib`` left on the host
            return MemoryEstimate(
                weights=size, kv_cache=0, overhead=0, per_device=[GiB] * len(devices), host=size,
                gpu_layers=gpu_layers, total_layers=None if gpu_layers is None else 32,
            )  # fmt: skip
        return MemoryEstimate(weights=size, kv_cache=0, overhead=0, host=size)

    return estimate


def place(hw: Hardware, ledger: Ledger, uid: str, replicas: int, host_gib: float = 1, **kw):  # type: ignore[no-untyped-def]
    placements = plan(
        uid=uid, replicas=replicas, hardware=hw, ledger=ledger, estimate=kw.pop("estimate", needs(host_gib)),
        n_gpu=kw.pop("n_gpu", None), gpu_idx=None, **kw,
    )  # fmt: skip
    for p in placements:
        ledger.add(f"{uid}/{p.replica}", p)
    return placements


def cores_of(placements) -> list[list[int]]:  # type: ignore[no-untyped-def]
    return [p.cores for p in placements]


# ---------------------------------------------------------------- cores


def test_a_launch_divides_the_cores_among_its_replicas() -> None:
    assert cores_of(place(host(6), Ledger(), "m", 3)) == [[0, 1], [2, 3], [4, 5]]
    assert cores_of(place(host(6), Ledger(), "m", 1)) == [[0, 1, 2, 3, 4, 5]]
    assert cores_of(place(host(2), Ledger(), "m", 3)) == [[0], [1], [0]]  # at least one each, shared when short
    assert cores_of(place(host(6), Ledger(), "m", 2, cores_per_replica=1)) == [[0], [1]]
    assert cores_of(place(host(6), Ledger(), "m", 2, cores_per_replica=0)) == [[], []]  # placement off


def test_later_launches_take_free_cores_then_share_as_the_strategy_says() -> None:
    hw, ledger = host(6), Ledger()
    place(hw, ledger, "a", 2, cores_per_replica=2)  # 0-1, 2-3
    assert cores_of(place(hw, ledger, "b", 1, cores_per_replica=2)) == [[4, 5]]
    # No core is free: IDLE_FIRST shares the least shared cores, PACK the first ones.
    trial = Ledger()
    trial.items, trial.cores = list(ledger.items), ledger.cores.copy()
    trial.cores.add("c/0", None, [0])  # core 0 now has two replicas
    assert cores_of(place(hw, trial.copy(), "d", 1, cores_per_replica=2)) == [[1, 2]]
    assert cores_of(place(hw, trial.copy(), "d", 1, cores_per_replica=2, strategy="PACK")) == [[0, 1]]
    # Released cores are free again.
    ledger.release("a/")
    assert cores_of(place(hw, ledger, "e", 1, cores_per_replica=4)) == [[0, 1, 2, 3]]


def test_gpu_replicas_get_a_small_set_unless_layers_stay_on_the_cpu() -> None:
    hw = host(16, gpus="24GiB,24GiB")
    full = place(hw, Ledger(), "gpu", 2, 0.1)
    assert cores_of(full) == [[0, 1], [2, 3]]
    partial = place(hw, Ledger(), "llama", 1, 0.1, estimate=needs(0.1, gpu_layers=20))
    assert partial[0].cores == list(range(16))  # host layers compute on the CPU: a CPU replica's share
    cpu = place(hw, Ledger(), "cpu", 2, 0.1, n_gpu=0)
    assert cores_of(cpu) == [list(range(8)), list(range(8, 16))]


def test_cluster_nodes_have_their_own_cores() -> None:
    nodes = [
        Node(id=n, address=f"10.0.0.{i}", cpu_count=4, memory_total=8 * GiB, memory_available=8 * GiB)
        for i, n in enumerate(["a", "b"], 1)
    ]
    hw = msgspec.structs.replace(host(4), nodes=nodes)
    ledger = Ledger()
    placed = place(hw, ledger, "m", 4)  # two replicas per node
    assert [(p.node, p.cores) for p in placed] == [("a", [0, 1]), ("b", [0, 1]), ("a", [2, 3]), ("b", [2, 3])]
    assert ledger.cores.owners("a") == {"m/0": [0, 1], "m/2": [2, 3]}


def test_ranges() -> None:
    assert ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert ranges([]) == ""
    assert parse_ranges("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]


PIN = """
import os, threading
from xinf.cores import pin, real_cores
real = real_cores(); n = len(real)
started = threading.Event(); done = threading.Event()
earlier = threading.Thread(target=lambda: (started.set(), done.wait())); earlier.start(); started.wait()
pinned = pin([n, n + 1] if n > 1 else [n])  # simulated cores beyond the real ones
expected = sorted({real[0], real[1 % n]})
print(pinned == expected == sorted(os.sched_getaffinity(0)) == sorted(os.sched_getaffinity(earlier.native_id)))
print(os.environ["OMP_NUM_THREADS"], os.environ["MKL_NUM_THREADS"])
done.set()
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux API")
def test_pin_maps_simulated_cores_onto_real_ones_for_every_thread() -> None:
    # In a child process: pinning the test process itself would slow the rest of the run.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PIN], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    threads = "2" if len(os.sched_getaffinity(0)) > 1 else "1"  # one thread per core of the set
    assert out.stdout.split() == ["True", threads, threads]
    # A user's OMP_NUM_THREADS sizes MKL's pool too (vLLM-CPU with "nobind" sizes only OpenMP's).
    out = subprocess.run(
        [sys.executable, "-c", PIN], capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1", "1"]


# ---------------------------------------------------------------- host memory


def test_cpu_replicas_reserve_host_memory_and_the_one_that_does_not_fit_is_refused() -> None:
    hw, ledger = host(memory=10 * GiB), Ledger()
    placed = place(hw, ledger, "a", 2, 4)
    assert [p.host for p in placed] == [4 * GiB, 4 * GiB] and ledger.reserved(HOST) == 8 * GiB
    with pytest.raises(LaunchError) as info:
        place(hw, ledger, "b", 1, 3)
    message = info.value.message
    assert "replica 0 of b needs 3.00 GiB of host memory (RAM) on this machine, but only 2.00 GiB is free" in message
    assert "8.00 GiB reserved by other replicas" in message and info.value.code == "insufficient_host_memory"
    ledger.release("a/1")
    assert place(hw, ledger, "b", 1, 3)[0].host == 3 * GiB


def test_one_launch_counts_its_own_replicas() -> None:
    with pytest.raises(LaunchError, match=r"replica 2 of m needs 4\.00 GiB"):
        place(host(memory=10 * GiB), Ledger(), "m", 3, 4)


def test_available_memory_bounds_the_reservation() -> None:
    hw = msgspec.structs.replace(host(memory=64 * GiB), memory_available=2 * GiB)
    with pytest.raises(LaunchError, match=r"only 2.00 GiB is free \(2.00 GiB available of 64.00 GiB"):
        place(hw, Ledger(), "m", 1, 3)


def test_the_host_part_of_a_gpu_replica_is_checked_too() -> None:
    hw = host(memory=4 * GiB, gpus="24GiB")
    assert place(hw, Ledger(), "m", 1, 1, estimate=needs(1, gpu_layers=20))[0].host == GiB
    with pytest.raises(LaunchError, match="of host memory"):
        place(hw, Ledger(), "m", 1, 6, estimate=needs(6, gpu_layers=20))


def test_terabytes_are_named_as_such() -> None:
    with pytest.raises(LaunchError, match=r"needs 20.00 TiB of host memory"):
        place(host(), Ledger(), "m", 1, 20 * 1024)
