"""The progress watchdog: a replica with requests in flight and no output for too long is restarted.

A ping only proves the replica's event loop turns; an engine can answer pings
and still never produce another token (a grammar that takes forever to
compile, a stuck CUDA stream, a deadlocked batch).  So each replica records
when it last made progress (a frame for any request, or a request starting on
an idle replica); a replica with requests in flight whose last progress is
older than ``XINF_STALL_TIMEOUT`` seconds gets no new requests and is killed.
Its requests end at once with a clean error (``... made no progress for Ns
...; retry the request``), the usual restart path brings it back, and
``xinf_replica_stalls_total`` counts it.  ``XINF_STALL_TIMEOUT=0`` turns the
watchdog off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xinf.model import RunningModel

log = logging.getLogger(__name__)


class ProgressWatchdog:
    """One task per server, checking every replica a few times per stall timeout."""

    def __init__(self, models: dict[str, RunningModel], stall_timeout: float):
        self.models = models  # the manager's, shared: models launched later are watched too
        self.stall_timeout = stall_timeout
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.stall_timeout > 0 and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        period = min(5.0, max(0.05, self.stall_timeout / 4))
        while True:
            await asyncio.sleep(period)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        for model in list(self.models.values()):
            for replica in list(model.replicas):
                if not replica.ready or replica.inflight <= 0:
                    continue
                idle = now - replica.last_progress
                if idle < self.stall_timeout:
                    continue
                model.stalls[replica.index] = model.stalls.get(replica.index, 0) + 1
                reason = (
                    f"{replica.name} made no progress for {idle:.0f}s with {replica.inflight} request(s) in flight "
                    f"(XINF_STALL_TIMEOUT={self.stall_timeout:g}); it is being restarted"
                )
                log.error("%s\n%s", reason, replica.tail(10))
                replica.status = "unhealthy"  # no new requests from here on
                replica.ended_by = reason
                replica.kill()
