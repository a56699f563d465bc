"""Watching replicas after start-up: one that stops answering pings is restarted.

A replica can hang with its process alive (an engine stuck in a C call, a
deadlock): the process watcher sees nothing, requests just wait.  Every
``XINFERENCE_HEALTH_CHECK_INTERVAL`` seconds each ready replica is pinged;
after ``XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD`` pings in a row without an
answer within ``XINFERENCE_HEALTH_CHECK_TIMEOUT`` it gets no more requests and
is killed, which sends it down the ordinary restart path.  The start-up probe
lives in ``ReplicaHandle.start``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from xinf.model import RunningModel
from xinf.replica.handle import HealthCheck, ReplicaDied, ReplicaHandle

log = logging.getLogger(__name__)


class HealthMonitor:
    """Pings every ready replica of the running ``models`` in a loop (one task per server)."""

    def __init__(self, models: Mapping[str, RunningModel], check: HealthCheck):
        self.models = models  # the manager's own dict: models launched later are watched too
        self.check = check
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.check.enabled and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check.interval)
            replicas = [r for m in list(self.models.values()) for r in m.replicas if r.ready]
            if replicas:
                await asyncio.gather(*(self.probe(r) for r in replicas))

    async def probe(self, replica: ReplicaHandle) -> None:
        try:
            await replica.ping(self.check.timeout)
        except asyncio.TimeoutError:
            pass
        except ReplicaDied:
            return  # the process watcher handles exits
        else:
            replica.failed_pings = 0
            return
        if not replica.ready:
            return
        replica.failed_pings += 1
        threshold = self.check.failure_threshold
        log.warning(
            "%s did not answer a health check within %gs (%d/%d)",
            replica.name,
            self.check.timeout,
            replica.failed_pings,
            threshold,
        )
        if replica.failed_pings >= threshold:
            replica.status = "unhealthy"  # no new requests from here on
            log.error(
                "%s failed %d health checks in a row; killing it so it restarts.\n%s",
                replica.name,
                threshold,
                replica.tail(10),
            )
            replica.kill()
