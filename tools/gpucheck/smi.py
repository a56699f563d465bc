"""What the GPU really holds, from ``nvidia-smi``; each process's resident memory where there is no GPU.

The parsers are pure (tested in CI on recorded output); the callers run
``nvidia-smi`` and return None when it is missing, so every check can say
"no GPU" instead of failing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

MiB = 1 << 20
GPU_FIELDS = ("index", "name", "memory.total", "memory.free", "memory.used")
APP_FIELDS = ("pid", "used_memory")


@dataclass(frozen=True)
class Gpu:
    """One row of ``nvidia-smi --query-gpu``; memory in bytes."""

    index: int
    name: str
    total: int
    free: int
    used: int


def _number(text: str) -> int | None:
    text = text.strip()
    if text.upper().startswith("[N/A") or text.upper() in ("N/A", "[NOT SUPPORTED]", ""):
        return None
    return int(float(text.split()[0]))


def parse_csv(text: str, columns: int) -> list[list[str]]:
    """Rows of ``--format=csv,noheader,nounits`` output, each with ``columns`` fields.

    Names may hold commas only as the last-but-n field in theory; GPU names do
    not, so a plain split is right.  Blank lines and a header line are skipped.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("index", "pid", "No running")):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) > columns:  # a name with commas: join the surplus back into field 1
            extra = len(fields) - columns
            fields = [fields[0], ",".join(fields[1 : 2 + extra]), *fields[2 + extra :]]
        if len(fields) == columns:
            rows.append(fields)
    return rows


def parse_gpus(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,name,memory.total,memory.free,memory.used --format=csv,noheader,nounits``."""
    gpus = []
    for index, name, total, free, used in parse_csv(text, len(GPU_FIELDS)):
        gpus.append(
            Gpu(
                index=int(index),
                name=name,
                total=(_number(total) or 0) * MiB,
                free=(_number(free) or 0) * MiB,
                used=(_number(used) or 0) * MiB,
            )
        )
    return gpus


def parse_apps(text: str) -> dict[int, int]:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`` -> {pid: bytes}.

    A process on several GPUs has one row per GPU: they are added up.  A row
    whose memory is unknown (``[N/A]``, some virtualised drivers) counts as 0.
    """
    apps: dict[int, int] = {}
    for pid, used in parse_csv(text, len(APP_FIELDS)):
        try:
            key = int(pid)
        except ValueError:
            continue
        apps[key] = apps.get(key, 0) + (_number(used) or 0) * MiB
    return apps


def available() -> bool:
    return shutil.which("nvidia-smi") is not None


def _query(args: list[str]) -> str | None:
    if not available():
        return None
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def gpus() -> list[Gpu] | None:
    """The GPUs nvidia-smi sees; None without nvidia-smi (or when it fails)."""
    text = _query([f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"])
    return None if text is None else parse_gpus(text)


def apps() -> dict[int, int] | None:
    """Memory per process on the GPUs; None without nvidia-smi."""
    text = _query([f"--query-compute-apps={','.join(APP_FIELDS)}", "--format=csv,noheader,nounits"])
    return None if text is None else parse_apps(text)


def raw(args: list[str]) -> str:
    """nvidia-smi's own text for the report (``-L``, the summary table); '' without it."""
    return _query(args) or ""


def rss(pid: int) -> int | None:
    """Resident memory of a process (``VmRSS``), bytes; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def environ(pid: int) -> dict[str, str]:
    """A process's environment as it started (``/proc/PID/environ``); {} when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return {}
    out = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
