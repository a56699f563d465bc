"""What every benchmark shares: settings, the request mix, timing, the HTTP client side, tables.

Nothing here imports an engine library: this module runs in every interpreter
the benchmarks use (.venv, .venv-vllm).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.knobs import Settings as Settings  # defined there, light for the launch baseline's child
from bench.knobs import messages as messages

REPO = Path(__file__).resolve().parent.parent


def tinymodels() -> Any:
    """tools/tinymodels.py, which builds the generated models (numpy and tokenizers only)."""
    tools = str(REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import tinymodels as module

    return module


# ------------------------------------------------------------------------------------------ timing


@dataclasses.dataclass
class Sample:
    """One batch of requests on one side: output tokens, wall seconds, each request's time to first token."""

    tokens: int
    seconds: float
    ttfts: list[float]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft(self) -> float:
        return statistics.median(self.ttfts)


#: one request: its index in -> (output tokens, seconds to the first token) out
Request = Callable[[int], Awaitable[tuple[int, float]]]


async def run_batch(one: Request, concurrency: int, requests: int, first: int = 0) -> Sample:
    """``requests`` calls of ``one`` with ``concurrency`` in flight at every moment."""
    gate = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []

    async def gated(i: int) -> int:
        async with gate:
            tokens, ttft = await one(i)
            ttfts.append(ttft)
            return tokens

    start = time.perf_counter()
    produced = await asyncio.gather(*(gated(first + i) for i in range(requests)))
    return Sample(sum(produced), time.perf_counter() - start, ttfts)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def run_loop(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` on uvloop where installed: xinf's server and vLLM's own use it, so the client does too."""
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> float:
    """Poll ``url`` until it answers 200; return the monotonic time it first did."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the process exited with {proc.returncode} before {url} answered")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def quiet_env(threads: int) -> dict[str, str]:
    """Environment for servers and engines: few log lines, and the engines' thread counts."""
    return {
        "XINF_LOG_LEVEL": "WARNING",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        # vLLM's CPU backend: no pinning on a shared machine, and as many OpenMP threads as the others get.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        # Every math library's pool: a replica given only OMP_NUM_THREADS would get the others sized to its cores.
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1"),
    }


# ------------------------------------------------------------------------------------------ the machine


def machine() -> dict[str, Any]:
    """What the figures ran on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


class LoadWatch:
    """Samples the 1-minute load average while the benchmarks run (other users' load shows in the figures)."""

    def __init__(self, every: float = 10.0):
        self.samples: list[float] = []
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        if not self.samples:
            return "n/a"
        s = self.samples
        return f"median {median(s):.2f}, min {min(s):.2f}, max {max(s):.2f} ({len(s)} samples)"


# ------------------------------------------------------------------------------------------ output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (it reads in a terminal and pastes into the README)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def say(*parts: Any) -> None:
    """Progress on stderr, so that stdout holds the tables only."""
    print(*parts, file=sys.stderr, flush=True)
