"""The accelerator inventory: NVML when a driver is there, simulated when asked, else CPU only."""

from __future__ import annotations

import logging
import os
import platform

from xinf.cores import host_cores
from xinf.types import Device, Hardware
from xinf.units import parse_size

log = logging.getLogger(__name__)


def simulated_devices(spec: str) -> list[Device]:
    """``XINF_SIMULATED_GPUS=24GiB,24GiB`` -> two free devices of 24 GiB."""
    devices = []
    for index, part in enumerate(p for p in spec.split(",") if p.strip()):
        size = parse_size(part)
        devices.append(Device(index=index, name=f"Simulated GPU {index}", total_memory=size, free_memory=size))
    return devices


def nvml_devices() -> list[Device]:
    """Devices NVML reports; an empty list when there is no driver or no GPU."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML unavailable: %s", exc)
        return []
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                utilization = None
            devices.append(
                Device(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_memory=int(memory.total),
                    free_memory=int(memory.free),
                    utilization=utilization,
                )
            )
        return devices
    except pynvml.NVMLError as exc:
        log.warning("NVML query failed, treating the machine as CPU only: %s", exc)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def host_memory() -> tuple[int, int]:
    """(total, available) system memory in bytes (``XINF_SIMULATED_HOST_MEMORY`` when set)."""
    from xinf import hostmemory

    return hostmemory.read()


def inventory() -> Hardware:
    """What this machine offers right now."""
    simulated = os.environ.get("XINF_SIMULATED_GPUS")
    devices = simulated_devices(simulated) if simulated else nvml_devices()
    total, available = host_memory()
    cores = host_cores()
    return Hardware(
        system=platform.system(),
        machine=platform.machine(),
        cpu_count=len(cores),
        cores=cores,
        memory_total=total,
        memory_available=available,
        devices=devices,
    )
