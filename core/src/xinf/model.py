"""A running model: its replicas, routing (least busy or by prompt prefix) and per-replica statistics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from xinf.downloads import Download
from xinf.errors import Overloaded, Unavailable, XinfError
from xinf.operations import Request, Result
from xinf.replica.handle import KEEPALIVE_BATCH, ReplicaDied, ReplicaHandle
from xinf.routing import PrefixTable, by_prefix, least_busy, prefix_keys, prompt_text
from xinf.schemas import LaunchRequest
from xinf.stats import ReplicaStats
from xinf.types import Chunk, EmbedRequest, EmbedResult, GenerateRequest, ModelSpec

log = logging.getLogger(__name__)

REQUESTS_PER_REPLICA = 256  # default in-flight limit per replica (launch option request_limits overrides)


class RunningModel:
    """A launched model: its spec, its engine and its replicas."""

    def __init__(self, uid: str, spec: ModelSpec, engine: str, request: LaunchRequest, options: dict[str, Any]):
        self.uid = uid
        self.spec = spec
        self.engine = engine
        self.request = request
        self.options = options
        self.replicas: list[ReplicaHandle] = []
        self.status = "launching"
        self.error: str | None = None
        self.created = int(time.time())
        self.restarts: dict[int, list[float]] = {}
        self.restart_count: dict[int, int] = {}
        self.stalls: dict[int, int] = {}  # restarts by the progress watchdog (xinf.watchdog)
        self.stats: dict[int, ReplicaStats] = {}
        self.download = Download()
        self.cancelled = False
        self.python = sys.executable  # a virtual environment's interpreter when the launch needs packages
        self.inflight = 0
        self._next = 0
        self.routing: str = (
            request.routing or "least_busy"
        )  # the manager fills in XINF_ROUTING when the launch says none
        self.prefixes = PrefixTable()

    def stats_of(self, replica: ReplicaHandle) -> ReplicaStats:
        stats = self.stats.get(replica.index)
        if stats is None:
            stats = self.stats[replica.index] = ReplicaStats()
        return stats

    @property
    def limit(self) -> int:
        """Requests this model takes at once (running and queued in its engines) before answering 429."""
        if self.request.request_limits is not None:
            return self.request.request_limits
        return REQUESTS_PER_REPLICA * max(1, len(self.replicas))

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request in flight for its whole life, or refuse it (429) past the model's limit."""
        if self.inflight >= self.limit:
            raise Overloaded(
                f"model {self.uid!r} already has {self.inflight} requests in flight (its limit); retry shortly",
                retry_after=1,
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def pick(self, exclude: set[int] | None = None, request: GenerateRequest | None = None) -> ReplicaHandle:
        """The replica for ``request``: by prompt prefix or the fewest in flight (rotating among ties)."""
        count = len(self.replicas)
        ready = [
            replica
            for replica in (self.replicas[(self._next + step) % count] for step in range(count))
            if replica.ready and not (exclude and id(replica) in exclude)
        ]
        if not ready:
            if self.status == "launching":
                raise Unavailable(f"model {self.uid!r} is still launching")
            raise Unavailable(f"no replica of model {self.uid!r} is running right now; retry shortly")
        if self.routing == "prefix" and request is not None:
            keys = prefix_keys(prompt_text(request.messages, request.prompt, request.tools))
            best = by_prefix(ready, self.prefixes, keys)
            self.prefixes.record(keys, best.index)
        else:
            best = least_busy(ready)
        self._next = (self.replicas.index(best) + 1) % count
        return best

    def batches(
        self, request: GenerateRequest, n: int = 1, keepalive: float | None = None
    ) -> AsyncIterator[list[Chunk]]:
        """Chunks from the replica routing picks, in batches (every chunk one frame brought; never empty).

        A replica that dies before sending anything is replaced by another one
        transparently; after the first chunk the error reaches the client.
        ``keepalive``: see ``ReplicaHandle.generate``.
        """
        return self._relayed(lambda replica: replica.generate(request, n, keepalive), _count_tokens, request)

    async def generate(
        self, request: GenerateRequest, n: int = 1, keepalive: float | None = None
    ) -> AsyncIterator[Chunk]:
        """``batches``, one chunk at a time."""
        batches = self.batches(request, n, keepalive)
        try:
            async for batch in batches:
                for chunk in batch:
                    yield chunk
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        result: EmbedResult = await self._once(lambda replica: replica.embed(request))
        return result

    async def serve(self, request: Request) -> Result:
        """A request of ``xinf.operations`` served by the least busy replica (rerank, transcribe, images)."""
        result: Result = await self._once(lambda replica: replica.serve(request))
        return result

    async def _once(self, send: Callable[[ReplicaHandle], Awaitable[Any]]) -> Any:
        """One request, one answer, from the least busy replica; a replica that dies meanwhile is replaced."""
        with self.admitted():
            tried: set[int] = set()
            while True:
                replica = self.pick(tried)
                stats = self.stats_of(replica)
                stats.requests += 1
                stats.running += 1
                start = time.perf_counter()
                try:
                    result = await send(replica)
                except ReplicaDied:
                    stats.error("replica_died")
                    tried.add(id(replica))
                    continue
                except XinfError as exc:
                    stats.error(exc.type)
                    raise
                except asyncio.CancelledError:
                    stats.error("cancelled")
                    raise
                finally:
                    stats.running -= 1
                elapsed = time.perf_counter() - start
                stats.latency.observe(elapsed)
                stats.ttft.observe(elapsed)
                stats.prompt_tokens += getattr(result, "prompt_tokens", 0)
                if hasattr(result, "units"):
                    stats.count(result)
                return result

    def stream(self, request: Request) -> AsyncIterator[Result]:
        """The pieces of a streamed request of ``xinf.operations`` (speech) from the least busy replica.

        A replica that dies before its first piece is replaced transparently; after it the error reaches the client.
        """
        return self._relayed(lambda replica: replica.stream(request), ReplicaStats.count)

    async def _relayed(
        self,
        send: Callable[[ReplicaHandle], AsyncIterator[Any]],
        count: Callable[[ReplicaStats, Any], None],
        request: GenerateRequest | None = None,
    ) -> AsyncIterator[Any]:
        """What ``send`` streams from a replica, counted in its statistics by ``count``; a replica that dies before
        its first item is replaced by another (keep-alives are not items)."""
        with self.admitted():
            tried: set[int] = set()
            while True:
                replica = self.pick(tried, request)
                stats = self.stats_of(replica)
                stats.requests += 1
                stats.waiting += 1
                start = time.perf_counter()
                started = False
                try:
                    async for item in send(replica):
                        if item is KEEPALIVE_BATCH:
                            yield item
                            continue
                        if not started:
                            started = True
                            stats.waiting -= 1
                            stats.running += 1
                            stats.ttft.observe(time.perf_counter() - start)
                        count(stats, item)
                        yield item
                    return
                except ReplicaDied:
                    stats.error("replica_died")
                    if started:
                        raise
                    tried.add(id(replica))
                    log.warning("%s died before answering; trying another replica", replica.name)
                except XinfError as exc:
                    stats.error(exc.type)
                    raise
                except (GeneratorExit, asyncio.CancelledError):
                    stats.error("cancelled")  # the client went away
                    raise
                except Exception:
                    stats.error("server_error")
                    raise
                finally:
                    if started:
                        stats.running -= 1
                        stats.latency.observe(time.perf_counter() - start)
                    else:
                        stats.waiting -= 1

    @property
    def context_length(self) -> int | None:
        """Tokens one request may use: what the replicas' engines report (llama.cpp: n_ctx / n_parallel), else the spec's."""
        reported = [r.info["context_length"] for r in self.replicas if isinstance(r.info.get("context_length"), int)]
        return min(reported) if reported else self.spec.context_length

    @property
    def visible_status(self) -> str:
        """``ready`` only while a replica can take requests: "restarting" while every replica is down."""
        if self.status == "ready" and self.replicas and not any(r.ready for r in self.replicas):
            return "restarting"
        return self.status

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": self.uid,
            "object": "model",
            "created": self.created,
            "owned_by": "xinf",
            "model_type": spec.model_type,
            "model_name": spec.name,
            "model_family": spec.family or spec.name,
            "model_ability": spec.abilities,
            "model_description": spec.description,
            "model_format": spec.format,
            "model_size_in_billions": spec.size_in_billions,
            "quantization": spec.quantization,
            "model_engine": self.engine,
            "model_path": spec.source.path,
            "context_length": self.context_length,
            "replica": len(self.replicas),
            "status": self.visible_status,
            "error": self.error,
            "routing": self.routing,
            "virtual_env": None if self.python == sys.executable else self.python,
            "adapters": [{"name": a.name, "path": a.path, "scale": a.scale} for a in spec.adapters],
            "replicas": [
                {
                    "index": r.index,
                    "status": r.status,
                    "pid": r.pid,
                    "inflight": r.inflight,
                    "requests": self.stats_of(r).requests,
                    "devices": r.launch.placement.devices,
                    "reserved": r.launch.placement.reserved,
                    "gpu_layers": r.launch.placement.gpu_layers,
                    "host_memory": r.launch.placement.host,
                    "cores": r.launch.placement.cores,
                    "cpus": r.info.get("cpus"),  # the real CPUs pinned (simulated cores map onto them)
                    "threads": r.info.get("threads"),  # as the engine reports them
                    "warm": bool(r.info.get("warm")),  # a pre-started worker of the warm pool (xinf.warmpool)
                    "node": r.node,
                    "log": r.log,
                }
                for r in self.replicas
            ],
        }


def _count_tokens(stats: ReplicaStats, batch: list[Chunk]) -> None:
    for chunk in batch:
        usage = chunk.usage
        if usage is not None:
            stats.completion_tokens += usage.completion_tokens
            if chunk.index == 0:  # the n choices share one prompt
                stats.prompt_tokens += usage.prompt_tokens
                stats.cached_tokens += usage.cached_tokens or 0
