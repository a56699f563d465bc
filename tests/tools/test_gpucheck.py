"""The GPU checks' pure parts (tools/gpucheck): nvidia-smi parsing, llama.cpp's buffer lines, comparisons, the report.

The checks themselves need a GPU machine (scripts/gpu-check, scripts/gpu-llamacpp); what they
compute from its output is tested here on recorded output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gpucheck import smi
from gpucheck.llamacpp_check import component_rows, is_device, parse_buffers
from gpucheck.report import Report, ratio, table, verdict
from gpucheck.transformers_check import compare_inventory

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]

# nvidia-smi --query-gpu=index,name,memory.total,memory.free,memory.used --format=csv,noheader,nounits
GPUS = "0, NVIDIA H200, 143771, 143217, 0\n1, NVIDIA H100 80GB HBM3, 81559, 80000, 1559\n"
# nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits
APPS = "4242, 1506\n4243, 2210\n4242, 100\n4244, [N/A]\n"

# What llama.cpp logs while a CUDA replica loads (xllamacpp, verbosity 4), trimmed.
LLAMA_LOG = """
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors: offloading 16 repeating layers to GPU
load_tensors: offloading output layer to GPU
load_tensors: offloaded 17/17 layers to GPU
load_tensors:   CPU_Mapped model buffer size =   501.00 MiB
load_tensors:        CUDA0 model buffer size =  2357.26 MiB
llama_context:  CUDA_Host  output buffer size =     1.96 MiB
llama_kv_cache:      CUDA0 KV buffer size =   128.00 MiB
sched_reserve:      CUDA0 compute buffer size =   254.50 MiB
sched_reserve:  CUDA_Host compute buffer size =    12.01 MiB
"""


def test_gpus_are_parsed_in_bytes() -> None:
    gpus = smi.parse_gpus(GPUS)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA H200"
    assert gpus[0].total == 143771 * MiB and gpus[0].free == 143217 * MiB and gpus[0].used == 0
    assert gpus[1].name == "NVIDIA H100 80GB HBM3" and gpus[1].used == 1559 * MiB


def test_a_name_with_a_comma_stays_whole() -> None:
    (gpu,) = smi.parse_gpus("0, Weird, GPU, 1000, 900, 100\n")
    assert gpu.name == "Weird,GPU" and gpu.total == 1000 * MiB and gpu.used == 100 * MiB


def test_apps_add_up_per_process_and_unknown_memory_is_zero() -> None:
    assert smi.parse_apps(APPS) == {4242: 1606 * MiB, 4243: 2210 * MiB, 4244: 0}
    assert smi.parse_apps("") == {}
    assert smi.parse_apps("No running processes found\n") == {}


def test_environ_of_this_process() -> None:
    import os

    assert smi.environ(os.getpid()).get("PATH") == os.environ.get("PATH")
    assert smi.environ(2**22 + 12345) == {}


@pytest.mark.parametrize(
    ("estimated", "measured", "expected"),
    [(100, 100, "ok"), (109, 100, "ok"), (91, 100, "ok"), (150, 100, "over by 50%"), (50, 100, "under by 50%")],
)
def test_verdict(estimated: int, measured: int, expected: str) -> None:
    assert verdict(estimated, measured) == expected


def test_nothing_measured_is_said_so() -> None:
    assert ratio(100, None) is None and ratio(100, 0) is None and ratio(None, 5) is None
    assert verdict(100, None) == "not measured"


def test_table_escapes_pipes() -> None:
    text = table(["a", "b"], [(1, "x|y")])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | x\\|y |"]


def test_a_failed_step_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    report = Report(tmp_path, "check")

    def boom() -> None:
        raise RuntimeError("no such device")

    report.step("first", "First", boom)
    assert report.step("second", "Second", lambda: 42) == 42
    text = (tmp_path / "report.md").read_text()
    assert "Failed steps: First: RuntimeError: no such device" in text
    assert "**FAILED**" in text and "## Second" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["steps"]["first"]["error"] == "RuntimeError: no such device"
    assert data["failures"] == ["First: RuntimeError: no such device"]
    assert set(data["seconds"]) == {"first", "second"}


def test_inventory_agrees_with_nvidia_smi() -> None:
    gpus = smi.parse_gpus(GPUS)
    xinf = [
        {"index": 0, "name": "NVIDIA H200", "total_memory": 143771 * MiB, "free_memory": 143000 * MiB},
        {"index": 1, "name": "NVIDIA H100", "total_memory": 81559 * MiB, "free_memory": 80000 * MiB},
    ]
    rows = compare_inventory(xinf, gpus)
    assert rows[0]["name_ok"] and rows[0]["total_ok"] and rows[0]["free_ok"]
    assert not rows[1]["name_ok"] and rows[1]["total_ok"]


def test_inventory_without_nvidia_smi_or_with_a_missed_gpu() -> None:
    xinf = [{"index": 0, "name": "Simulated GPU 0", "total_memory": 1 << 30, "free_memory": 1 << 30}]
    (row,) = compare_inventory(xinf, None)
    assert row["smi_name"] is None and not row["total_ok"]
    rows = compare_inventory([], smi.parse_gpus(GPUS))
    assert [r["index"] for r in rows] == [0, 1] and not any(r["name_ok"] for r in rows)


def test_llamacpp_buffers_by_place_and_kind() -> None:
    buffers = parse_buffers(LLAMA_LOG)
    assert buffers["device"] == {
        "model": int(2357.26 * MiB),
        "KV": 128 * MiB,
        "compute": int(254.5 * MiB),
    }
    assert buffers["host"] == {"model": 501 * MiB, "output": int(1.96 * MiB), "compute": int(12.01 * MiB)}
    assert buffers["offloaded"] == [17, 17]
    assert is_device("CUDA0") and is_device("CUDA1")
    assert not any(is_device(w) for w in ("CUDA_Host", "CPU", "CPU_Mapped", "CPU_REPACK"))


def test_only_the_last_load_of_a_restarted_replica_counts() -> None:
    second = LLAMA_LOG.replace("2357.26", "1000.00").replace("17/17", "9/17")
    buffers = parse_buffers(LLAMA_LOG + "replica restarted\n" + second)
    assert buffers["device"]["model"] == 1000 * MiB
    assert buffers["offloaded"] == [9, 17]
    assert parse_buffers("nothing here") == {"device": {}, "host": {}, "raw": {}}


def test_component_rows_compare_the_plan_with_the_buffers() -> None:
    buffers = parse_buffers(LLAMA_LOG)
    plan = {
        "weights": 2858 * MiB,
        "kv_cache": 128 * MiB,
        "overhead": 780 * MiB,
        "per_device": [3250 * MiB],
        "host": 520 * MiB,
    }
    rows = {name: (e, m) for name, e, m in component_rows(plan, buffers, 3300 * MiB, 512 * MiB)}
    device_buffers = int(2357.26 * MiB) + 128 * MiB + int(254.5 * MiB)
    assert rows["weights (all places)"] == (2858 * MiB, int(2357.26 * MiB) + 501 * MiB)
    assert rows["KV cache (all places)"] == (128 * MiB, 128 * MiB)
    assert rows["compute and output buffers"] == (268 * MiB, int(254.5 * MiB) + int(1.96 * MiB) + int(12.01 * MiB))
    assert rows["device reserve (CUDA context, cuBLAS)"] == (512 * MiB, 3300 * MiB - device_buffers)
    assert rows["device: llama.cpp's buffers"] == (3250 * MiB - 512 * MiB, device_buffers)
    assert rows["device: the process (nvidia-smi)"] == (3250 * MiB, 3300 * MiB)
    assert rows["host buffers"] == (520 * MiB, 501 * MiB + int(1.96 * MiB) + int(12.01 * MiB))


def test_without_a_gpu_the_reserve_is_not_measured() -> None:
    rows = {
        name: m for name, _, m in component_rows({"per_device": [1]}, parse_buffers(LLAMA_LOG), 10**10, 1, on_gpu=False)
    }
    assert rows["device reserve (CUDA context, cuBLAS)"] is None


def test_carried_requirements_are_pinned() -> None:
    for name in ("gpu-common.txt", "gpu-transformers.txt", "gpu-llamacpp.txt"):
        lines = [
            line.strip()
            for line in (REPO / "requirements" / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in lines), name


def test_reserve_is_the_estimators() -> None:
    from gpucheck.llamacpp_check import RESERVE

    from xinf_llamacpp.estimate import DEVICE_RESERVE

    assert RESERVE == DEVICE_RESERVE
