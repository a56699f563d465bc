"""Warm launches: replica processes started ahead of time, their engine's libraries already imported.

Starting a replica costs an interpreter start, xinf's imports and the
engine's (torch and transformers: seconds) before the model's own load.  The
pool keeps idle workers (``python -m xinf.replica --pool ENGINE SOCKET``) per
(interpreter, engine): each imports what the engine plugin lists in
``WARM_IMPORTS``, says ``Idle`` and waits.  A launch on this machine takes one
that fits (``ProcessReplica``), sends it ``Adopt`` (the replica's environment
and log) and then ``Launch`` as to a fresh process.  A taken worker is
replaced in the background once no launch is loading (so the refill does not
compete with the load it was meant to speed up).

**What a worker cannot change after its imports.**  Libraries read some
variables when they load: the OpenMP/BLAS thread counts, anything an engine
reads at import (``HF_HUB_OFFLINE``...).  So a worker fits a launch only when
the launch's environment is the one the worker started with, apart from the
device-visibility variables (``DEVICE_VARIABLES``): workers start with every
device hidden (``CUDA_VISIBLE_DEVICES=""``, so no import can take a device
before placement) and take the launch's value before the model loads, unless
the worker's imports loaded a GPU driver (it says so in ``Idle``; the driver
has then read the hidden value for good and the worker only fits launches
that see no device).  The thread variables a replica's core set implies
(``xinf.cores.pin``) count as part of its environment.  Pinning itself
(affinity) applies to every thread at any time.  A launch that fits no
worker starts cold, and the pool then starts its workers with that launch's
environment: the next launch like it is warm.

**Bounds.**  ``XINF_WARM_POOL`` workers per (interpreter, engine) (0: no
pool), ``XINF_WARM_POOL_TOTAL`` in all: the pools of the engines launched
most recently keep theirs, the others' idle workers are stopped.  A pool
opens at its engine's first launch, or with the server for the engines in
``XINF_WARM_POOL_ENGINES``.  A worker that dies before being taken is
replaced after a back-off; after ``GIVE_UP`` deaths in a row the pool of
that engine stops (a launch still works, cold).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from xinf import cores
from xinf.replica import protocol as p
from xinf.replica import spawn
from xinf.settings import Settings

log = logging.getLogger(__name__)

#: Variables a worker still takes from the launch (unless it loaded a GPU driver): which devices it sees.
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
GIVE_UP = 5  # deaths in a row of one pool's workers before that pool stops

Key = tuple[str, str]  # (interpreter, engine)


def profile(env: dict[str, str], cores_: list[int]) -> dict[str, str]:
    """What of a replica's environment a worker must have had from its start: all but the devices it sees,
    plus the thread variables its core set implies (``xinf.cores.pin`` sets them where they are not set)."""
    out = {k: v for k, v in env.items() if k not in DEVICE_VARIABLES}
    if cores_:
        for name in cores.THREAD_VARIABLES:
            out.setdefault(name, str(len(cores_)))
    return out


class Worker:
    """One pre-started replica process: starting, then idle until a launch takes it."""

    def __init__(self, key: Key, env: dict[str, str]):
        self.key = key
        self.env = env  # its profile (``profile``)
        self.proc: asyncio.subprocess.Process | None = None
        self.connection: spawn.Connection | None = None
        self.driver = False
        self.idle = False  # said Idle: it can be taken
        self.taken = False

    def fits(self, env: dict[str, str], cores_: list[int]) -> bool:
        if profile(env, cores_) != self.env:
            return False
        # A loaded driver read the hidden devices already: only a launch that sees none fits.
        return not self.driver or all(env.get(name, "") == "" for name in DEVICE_VARIABLES)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        if self.connection is not None:
            self.connection[1].close()


class WarmPool:
    """Idle replica workers per (interpreter, engine), within ``XINF_WARM_POOL`` and ``XINF_WARM_POOL_TOTAL``."""

    def __init__(self, settings: Settings, rundir: Path, base_env: Callable[[], dict[str, str]]):
        self.settings = settings
        self.size = settings.warm_pool
        self.total = settings.warm_pool_total
        self.logs = settings.home / "logs" / "pool"
        self.rundir = rundir
        self.base_env = base_env
        self.workers: list[Worker] = []  # starting and idle, oldest first
        self.profiles: dict[Key, dict[str, str]] = {}  # pools by last use (last: most recent)
        self.deaths: dict[Key, int] = {}
        self.stopped: set[Key] = set()
        self.taken = 0  # launches that got a worker
        self.cold = 0  # launches on this machine that did not
        self.loading = 0
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.ids = itertools.count()

    # ------------------------------------------------------------ launches

    def open(self, engine: str, engine_env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        """Start a pool for ``engine`` before its first launch (``XINF_WARM_POOL_ENGINES``); ``engine_env``: its
        plugin's ``REPLICA_ENV``, under the server's own environment as a launch has it."""
        key = (python, engine)
        if key not in self.profiles:
            self.profiles[key] = profile({**(engine_env or {}), **self.base_env()}, self.default_cores())
        self.refill()

    def take(self, python: str, engine: str, env: dict[str, str], cores_: list[int]) -> Worker | None:
        """An idle worker of ``engine`` in ``python`` that can become this replica, or None (start cold)."""
        key = (python, engine)
        worker = next((w for w in self.workers if w.key == key and w.idle and w.fits(env, cores_)), None)
        self.profiles.pop(key, None)  # most recently used now
        self.profiles[key] = profile(env, cores_)  # the next worker is made for a launch like this one
        if worker is None:
            self.cold += 1
            log.info("%s: no warm worker fits this launch; starting a replica process", engine)
        else:
            self.workers.remove(worker)
            worker.taken = True
            self.taken += 1
            self.deaths.pop(key, None)
        self.refill()
        return worker

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A replica is loading: workers wait to start until none is."""
        self.loading += 1
        self.quiet.clear()
        try:
            yield
        finally:
            self.loading -= 1
            if not self.loading:
                self.quiet.set()

    def counts(self) -> dict[tuple[str, str], int]:
        """(engine, "idle" or "starting") -> workers, for /metrics."""
        out: dict[tuple[str, str], int] = {}
        for w in self.workers:
            state = "idle" if w.idle else "starting"
            out[(w.key[1], state)] = out.get((w.key[1], state), 0) + 1
        return out

    # ------------------------------------------------------------ keeping it full

    def default_cores(self) -> list[int]:
        """The core set one CPU replica gets by default: its thread variables go into a new pool's workers."""
        if self.settings.cpu_cores_per_replica == 0:
            return []  # core placement is off: no thread variables are set
        try:
            count = cores.per_replica(self.settings.cpu_cores_per_replica, len(cores.host_cores()), 1)
        except ValueError:
            return []
        return list(range(count))

    def allotment(self) -> dict[Key, int]:
        """Workers each pool may keep: the most recently used pools first, up to the total."""
        left, out = self.total, {}
        for key in reversed(list(self.profiles)):
            share = 0 if key in self.stopped else min(self.size, left)
            out[key] = share
            left -= share
        return out

    def refill(self) -> None:
        if self.closed:
            return
        allotted = self.allotment()
        for w in list(self.workers):  # over the bound, or made for launches unlike the last one
            if allotted.get(w.key, 0) <= 0 or w.env != self.profiles.get(w.key):
                self.workers.remove(w)
                w.kill()
        for key, share in allotted.items():
            have = sum(1 for w in self.workers if w.key == key)
            for _ in range(share - have):
                worker = Worker(key, self.profiles[key])
                self.workers.append(worker)
                task = asyncio.get_running_loop().create_task(self._start(worker))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _start(self, worker: Worker) -> None:
        python, engine = worker.key
        deaths = self.deaths.get(worker.key, 0)
        await asyncio.sleep(min(30.0, 0.5 * 2**deaths) if deaths else 0.0)  # a back-off after deaths in a row
        await self.quiet.wait()
        if worker not in self.workers:
            return  # dropped meanwhile
        env = {**worker.env, **{name: "" for name in DEVICE_VARIABLES}}  # no device before placement
        n = next(self.ids)
        try:
            worker.proc, connection = await spawn.start(
                python,
                ["--pool", engine],
                env=env,
                log_path=self.logs / f"{engine}.log",
                socket_path=self.rundir / f"pool-{n}.sock",
            )
            worker.connection = connection
            idle = await p.read_frame(connection[0]) if connection else None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            idle = None
        if not isinstance(idle, p.Idle) or worker not in self.workers:
            self._died(worker, "before it was ready")
            return
        assert worker.proc is not None
        worker.driver = idle.driver
        worker.idle = True
        log.info("warm worker for %s ready (pid %d)", engine, worker.proc.pid)
        await worker.proc.wait()
        if not worker.taken:
            self._died(worker, f"while idle (exit code {worker.proc.returncode})")

    def _died(self, worker: Worker, when: str) -> None:
        worker.kill()
        if worker not in self.workers or self.closed:
            return  # stopped by the pool itself
        self.workers.remove(worker)
        key = worker.key
        self.deaths[key] = self.deaths.get(key, 0) + 1
        log.warning("warm worker for %s died %s; see %s", key[1], when, self.logs / f"{key[1]}.log")
        if self.deaths[key] >= GIVE_UP:
            self.stopped.add(key)
            log.error("warm pool of %s stopped after %d deaths in a row; its launches start cold", key[1], GIVE_UP)
        self.refill()

    async def close(self) -> None:
        """Stop every worker (server shutdown): none outlives the server."""
        self.closed = True
        workers, self.workers = self.workers, []
        for w in workers:
            w.kill()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(w.proc.wait() for w in workers if w.proc is not None), return_exceptions=True)
