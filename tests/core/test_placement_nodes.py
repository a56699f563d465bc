"""Placement across the machines of a cluster: devices are (node, index), the same strategies apply."""

from __future__ import annotations

import msgspec
import pytest

from xinf.devices import simulated_devices
from xinf.errors import LaunchError
from xinf.placement import Ledger, plan
from xinf.types import Device, Hardware, MemoryEstimate, Node

GiB = 1 << 30


def cluster(*machines: tuple[str, list[str]], memory: int = 60 * GiB) -> Hardware:
    """Nodes named ``machines[i][0]`` with those simulated GPUs; the first is the server's."""
    nodes, devices = [], []
    for i, (name, gpus) in enumerate(machines):
        nodes.append(
            Node(
                id=name, address=f"10.0.0.{i + 1}", hostname=f"host-{name}", cpu_count=8,
                memory_total=64 * GiB, memory_available=memory, local=i == 0,
            )
        )  # fmt: skip
        devices += [msgspec.structs.replace(d, node=name) for d in simulated_devices(",".join(gpus))]
    return Hardware(
        system="Linux", machine="x86_64", cpu_count=8, memory_total=64 * GiB, memory_available=memory,
        devices=devices, nodes=nodes,
    )  # fmt: skip


def needs(size_gib: float):  # type: ignore[no-untyped-def]
    def estimate(devices: list[Device]) -> MemoryEstimate:
        total = int(size_gib * GiB)
        share = total // max(1, len(devices))
        return MemoryEstimate(
            weights=total, kv_cache=0, overhead=0, per_device=[share] * len(devices), host=0 if devices else total
        )

    return estimate


def place(hw: Hardware, ledger: Ledger, uid: str, replicas: int, size_gib: float, **kw) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    placements = plan(
        uid=uid, replicas=replicas, hardware=hw, ledger=ledger, estimate=needs(size_gib),
        n_gpu=kw.pop("n_gpu", None), gpu_idx=kw.pop("gpu_idx", None), **kw,
    )  # fmt: skip
    for p in placements:
        ledger.add(f"{uid}/{p.replica}", p)
    return [(p.node, p.devices) for p in placements]


def test_the_same_strategy_places_on_every_node() -> None:
    hw = cluster(("a", ["24GiB"]), ("b", ["24GiB", "24GiB"]))
    # Most free memory first, ties to the server's node and lower indexes.
    assert place(hw, Ledger(), "m", 3, 2) == [("a", [0]), ("b", [0]), ("b", [1])]
    ledger = Ledger()
    assert place(hw, ledger, "big", 1, 20) == [("a", [0])]
    assert place(hw, ledger, "small", 2, 10) == [("b", [0]), ("b", [1])]
    assert place(hw, ledger, "third", 1, 12) == [("b", [0])]  # 14 GiB free on b/0 and b/1, 4 on a/0
    assert place(hw, Ledger(), "m", 3, 2, strategy="PACK") == [("a", [0]), ("a", [0]), ("a", [0])]


def test_a_reservation_counts_on_its_own_node_only() -> None:
    hw, ledger = cluster(("a", ["24GiB"]), ("b", ["24GiB"])), Ledger()
    assert place(hw, ledger, "one", 1, 20) == [("a", [0])]
    assert place(hw, ledger, "two", 1, 20) == [("b", [0])]
    assert ledger.reserved(0, "a") == 20 * GiB and ledger.reserved(0, "b") == 20 * GiB
    with pytest.raises(LaunchError) as info:
        place(hw, ledger, "three", 1, 20)
    assert "node a GPU 0 (Simulated GPU 0): 4.00 GiB free, needs 20.00 GiB" in info.value.message
    assert "node b GPU 0 (Simulated GPU 0): 4.00 GiB free, needs 20.00 GiB" in info.value.message
    ledger.release("one/")
    assert place(hw, ledger, "three", 1, 20) == [("a", [0])]


def test_one_replica_never_spans_machines() -> None:
    hw = cluster(("a", ["24GiB"]), ("b", ["24GiB"]))
    with pytest.raises(LaunchError, match=r"n_gpu=2 asked for, but only 1 device\(s\) can be used on one node"):
        place(hw, Ledger(), "m", 1, 30, n_gpu=2)
    hw = cluster(("a", ["24GiB"]), ("b", ["24GiB"]), ("c", ["24GiB", "24GiB"]))
    assert place(hw, Ledger(), "m", 1, 30, n_gpu=2) == [("c", [0, 1])]


def test_worker_ip_pins_a_node_by_address_or_id() -> None:
    hw = cluster(("a", ["24GiB"]), ("b", ["24GiB"]))
    assert place(hw, Ledger(), "m", 2, 2, worker_ip="10.0.0.2") == [("b", [0]), ("b", [0])]
    assert place(hw, Ledger(), "m", 1, 2, worker_ip="a", n_gpu=0) == [("a", [])]
    with pytest.raises(LaunchError) as info:
        place(hw, Ledger(), "m", 1, 2, worker_ip="10.9.9.9")
    assert "worker_ip '10.9.9.9' is not a node of the cluster" in info.value.message
    assert "10.0.0.1 (host-a), 10.0.0.2 (host-b)" in info.value.message
    single = msgspec.structs.replace(hw, nodes=[], devices=simulated_devices("24GiB"))
    with pytest.raises(LaunchError, match="this server runs on one machine"):
        place(single, Ledger(), "m", 1, 2, worker_ip="10.0.0.1")


def test_cpu_replicas_spread_over_nodes_that_have_the_memory() -> None:
    hw, ledger = cluster(("a", []), ("b", []), ("c", [])), Ledger()
    assert place(hw, ledger, "m", 4, 2) == [("a", []), ("b", []), ("c", []), ("a", [])]
    assert place(hw, ledger, "n", 2, 2) == [("b", []), ("c", [])]  # a has two already
    assert ledger.reserved(-1, "a") == 4 * GiB
    assert place(hw, Ledger(), "m", 3, 2, strategy="PACK") == [("a", []), ("a", []), ("a", [])]
    with pytest.raises(LaunchError) as info:
        place(cluster(("a", []), ("b", []), memory=8 * GiB), Ledger(), "huge", 1, 10)
    assert "does not fit in the memory of any node" in info.value.message
    assert "10.0.0.2 (host-b): 8.00 GiB free, needs 10.00 GiB" in info.value.message


def test_gpu_nodes_take_gpu_replicas_and_n_gpu_0_goes_anywhere() -> None:
    hw = cluster(("a", []), ("b", ["24GiB"]))
    assert place(hw, Ledger(), "m", 2, 2) == [("b", [0]), ("b", [0])]
    assert place(hw, Ledger(), "m", 2, 2, n_gpu=0) == [("a", []), ("b", [])]
    with pytest.raises(LaunchError, match=r"node 10\.0\.0\.1 has no GPU"):
        place(hw, Ledger(), "m", 1, 2, n_gpu=1, worker_ip="a")
