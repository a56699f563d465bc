"""Placing replicas on (simulated) devices from memory estimates."""

from __future__ import annotations

import pytest

from xinf.devices import parse_size, simulated_devices
from xinf.errors import LaunchError
from xinf.placement import Ledger, plan
from xinf.types import Device, Hardware, MemoryEstimate

GiB = 1 << 30


def machine(*sizes: str) -> Hardware:
    return Hardware(
        system="Linux", machine="x86_64", cpu_count=2, memory_total=GiB, memory_available=GiB,
        devices=simulated_devices(",".join(sizes)),
    )  # fmt: skip


def needs(size_gib: float):  # type: ignore[no-untyped-def]
    def estimate(devices: list[Device]) -> MemoryEstimate:
        total = int(size_gib * GiB)
        share = total // max(1, len(devices))
        return MemoryEstimate(weights=total, kv_cache=0, overhead=0, per_device=[share] * len(devices))

    return estimate


def place(hardware: Hardware, ledger: Ledger, uid: str, replicas: int, size_gib: float, **kw) -> list[list[int]]:  # type: ignore[no-untyped-def]
    placements = plan(
        uid=uid, replicas=replicas, hardware=hardware, ledger=ledger, estimate=needs(size_gib),
        n_gpu=kw.pop("n_gpu", None), gpu_idx=kw.pop("gpu_idx", None), **kw,
    )  # fmt: skip
    for p in placements:
        ledger.add(f"{uid}/{p.replica}", p)
    return [p.devices for p in placements]


@pytest.mark.parametrize(
    ("gpus", "replicas", "expected"),
    [
        (["24GiB"], 3, [[0], [0], [0]]),  # one GPU, three replicas: all share it
        (["24GiB", "24GiB"], 3, [[0], [1], [0]]),  # two GPUs, three replicas: 2 on GPU0, 1 on GPU1
        (["24GiB", "24GiB"], 2, [[0], [1]]),  # one each
    ],
)
def test_seed_scenarios(gpus: list[str], replicas: int, expected: list[list[int]]) -> None:
    assert place(machine(*gpus), Ledger(), "m", replicas, 2) == expected


def test_memory_decides_not_model_count() -> None:
    hw, ledger = machine("24GiB", "24GiB"), Ledger()
    assert place(hw, ledger, "big", 1, 20) == [[0]]
    assert place(hw, ledger, "small", 1, 10) == [[1]]  # GPU0 has only 4 GiB left
    # More small models go where the most memory is free (GPU1: 14, then 11, then 8 GiB free) ...
    assert place(hw, ledger, "tiny", 1, 3) == [[1]]
    assert place(hw, ledger, "tiny2", 1, 3) == [[1]]
    assert place(hw, ledger, "four", 1, 4) == [[1]]
    # ... until both have 4 GiB free, and the tie goes to the lower index.
    assert place(hw, ledger, "four2", 1, 4) == [[0]]


def test_a_device_with_more_models_but_more_memory_wins() -> None:
    hw, ledger = machine("24GiB", "24GiB"), Ledger()
    place(hw, ledger, "a", 1, 16)  # GPU0: one model, 8 GiB free
    place(hw, ledger, "b", 2, 1)  # GPU1 gets both (24 > 8 free), so it holds two models
    assert place(hw, ledger, "c", 1, 4) == [[1]]  # 22 GiB free beats 8 GiB free despite the count


def test_pack_fills_devices_in_order() -> None:
    hw, ledger = machine("24GiB", "24GiB"), Ledger()
    assert place(hw, ledger, "a", 3, 7, strategy="PACK") == [[0], [0], [0]]
    assert place(hw, ledger, "b", 1, 7, strategy="PACK") == [[1]]  # 3 GiB left on GPU0


def test_no_multi_replica_per_gpu() -> None:
    hw = machine("24GiB", "24GiB")
    assert place(hw, Ledger(), "m", 2, 1, allow_multi_replica=False) == [[0], [1]]
    with pytest.raises(LaunchError, match="unoccupied"):
        place(hw, Ledger(), "m", 3, 1, allow_multi_replica=False)


def test_gpu_idx_and_n_gpu_are_respected() -> None:
    hw = machine("24GiB", "24GiB", "24GiB")
    assert place(hw, Ledger(), "m", 2, 1, gpu_idx=[2]) == [[2], [2]]
    assert place(hw, Ledger(), "m", 1, 30, n_gpu=2) == [[0, 1]]
    with pytest.raises(LaunchError, match=r"gpu_idx \[7\] not found"):
        place(hw, Ledger(), "m", 1, 1, gpu_idx=[7])
    with pytest.raises(LaunchError, match="only 3 device"):
        place(hw, Ledger(), "m", 1, 1, n_gpu=4)
    assert place(hw, Ledger(), "m", 2, 1, n_gpu=0) == [[], []]


def test_too_big_says_what_is_free_and_what_is_needed() -> None:
    with pytest.raises(LaunchError) as info:
        place(machine("24GiB", "16GiB"), Ledger(), "huge", 1, 30)
    assert "GPU 0 (Simulated GPU 0): 24.00 GiB free, needs 30.00 GiB" in info.value.message
    assert "GPU 1 (Simulated GPU 1): 16.00 GiB free, needs 30.00 GiB" in info.value.message


def test_offloading_engines_get_the_layers_that_fit() -> None:
    layer = 1 * GiB

    def llama_like(devices: list[Device]) -> MemoryEstimate:
        free = devices[0].free_memory if devices else 0
        layers = min(32, free // layer)
        return MemoryEstimate(
            weights=32 * layer, kv_cache=0, overhead=0, per_device=[layers * layer] * len(devices),
            gpu_layers=layers, total_layers=32,
        )  # fmt: skip

    placements = plan(
        uid="llama", replicas=1, hardware=machine("24GiB", "12GiB"), ledger=Ledger(),
        estimate=llama_like, n_gpu=None, gpu_idx=None,
    )  # fmt: skip
    assert placements[0].devices == [0] and placements[0].gpu_layers == 24


def test_release_frees_the_memory() -> None:
    hw, ledger = machine("24GiB"), Ledger()
    place(hw, ledger, "a", 2, 10)
    with pytest.raises(LaunchError):
        place(hw, ledger, "b", 1, 10)
    ledger.release("a/1")
    assert place(hw, ledger, "b", 1, 10) == [[0]]
    ledger.release("a/")
    ledger.release("b/")
    assert ledger.reserved(0) == 0


def test_no_estimate_spreads_by_count() -> None:
    placements = plan(
        uid="m", replicas=3, hardware=machine("24GiB", "24GiB"), ledger=Ledger(),
        estimate=lambda devices: None, n_gpu=None, gpu_idx=None,
    )  # fmt: skip
    assert [p.devices for p in placements] == [[0], [1], [0]]


def test_parse_size() -> None:
    assert parse_size("24GiB") == 24 * GiB
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5G") == int(1.5 * GiB)
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
