"""Host memory (RAM) as a placement resource.

A CPU replica keeps its whole model in host memory; a GPU replica keeps the
part the engine does not offload (llama.cpp's host layers, its token
embeddings, logits).  Engines say how much in ``MemoryEstimate.host``.  The
placement reserves that much of the replica's node and refuses a launch that
does not fit, naming what it needs and what is free, before any process
starts: an option such as ``n_ctx 1000000000`` is then a 400, not a replica
the kernel's OOM killer ends after it has eaten the machine.

Free host memory is ``min(available, total - reserved)``: "available" already
counts what loaded replicas use, and the reservations cover replicas still
loading, without counting a loaded one twice.

``XINF_SIMULATED_HOST_MEMORY=8GiB`` makes a node report that much memory,
all of it available (for tests and dry runs).
"""

from __future__ import annotations

import os

from xinf.errors import LaunchError
from xinf.types import MemoryEstimate
from xinf.units import format_bytes as size


def read() -> tuple[int, int]:
    """(total, available) host memory in bytes: ``XINF_SIMULATED_HOST_MEMORY``, else /proc/meminfo."""
    simulated = os.environ.get("XINF_SIMULATED_HOST_MEMORY", "").strip()
    if simulated:
        from xinf.units import parse_size

        size = parse_size(simulated)
        return size, size
    return _meminfo()


def _meminfo() -> tuple[int, int]:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        return pages * size, pages * size


def free(total: int, available: int, reserved: int) -> int:
    """What a new replica may still reserve."""
    return max(0, min(available, total - reserved))


def need(estimate: MemoryEstimate | None) -> int:
    """Host bytes one replica needs by its engine's estimate; 0 when the engine cannot estimate."""
    return estimate.host if estimate is not None and estimate.host else 0


def check(
    *, uid: str, index: int, estimate: MemoryEstimate | None, total: int, available: int, reserved: int, where: str
) -> int:
    """The bytes to reserve for one replica; ``LaunchError`` naming need and free memory when it does not fit."""
    wanted = need(estimate)
    room = free(total, available, reserved)
    if wanted <= room:
        return wanted
    assert estimate is not None
    lines = [
        f"replica {index} of {uid} needs {size(wanted)} of host memory (RAM) {where}, but only {size(room)} is free "
        f"({size(available)} available of {size(total)}, {size(reserved)} reserved by other replicas)",
        f"  estimate: weights {size(estimate.weights)}, KV cache {size(estimate.kv_cache)}, "
        f"overhead {size(estimate.overhead)}",
    ]
    if estimate.note:
        lines += [f"    {line}" for line in estimate.note.splitlines()]
    lines.append("  lower the context (n_ctx, context_length, max_model_len) or the batch, or use a smaller model")
    raise LaunchError("\n".join(lines), code="insufficient_host_memory")
