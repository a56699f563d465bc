"""Request metrics in Prometheus format, read from the running models on demand.

The numbers themselves live in ``xinf.stats`` (``ReplicaStats`` on each
model).  ``prometheus_client`` is imported when ``/metrics`` is first scraped,
so a server that is never scraped never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xinf.model import RunningModel
    from xinf.warmpool import WarmPool

STATUSES = ("starting", "ready", "unhealthy", "dead", "failed", "stopped")


class Collector:
    """A prometheus_client collector reading the running models at scrape time."""

    def __init__(self, models: Mapping[str, RunningModel]):
        self.models = models

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "replica"]
        requests = CounterMetricFamily("xinf_requests", "Requests sent to a model replica", labels=labels)
        errors = CounterMetricFamily(
            "xinf_request_errors", "Requests that ended with an error, by error type", labels=[*labels, "type"]
        )
        prompt = CounterMetricFamily("xinf_prompt_tokens", "Prompt tokens processed", labels=labels)
        cached = CounterMetricFamily(
            "xinf_prompt_cached_tokens", "Prompt tokens the engine took from its prefix cache", labels=labels
        )
        completion = CounterMetricFamily("xinf_completion_tokens", "Completion tokens generated", labels=labels)
        running = GaugeMetricFamily("xinf_requests_running", "Requests producing output now", labels=labels)
        waiting = GaugeMetricFamily("xinf_requests_waiting", "Requests sent to a replica, no output yet", labels=labels)
        latency = HistogramMetricFamily(
            "xinf_request_latency_seconds", "Time from request to last output", labels=labels
        )
        ttft = HistogramMetricFamily(
            "xinf_time_to_first_token_seconds", "Time from request to first output", labels=labels
        )
        status = GaugeMetricFamily(
            "xinf_replica_status", "1 for the replica's current status", labels=[*labels, "status"]
        )
        up = GaugeMetricFamily("xinf_replica_up", "1 if the replica is ready for requests", labels=labels)
        restarts = CounterMetricFamily("xinf_replica_restarts", "Times the replica was restarted", labels=labels)
        stalls = CounterMetricFamily(
            "xinf_replica_stalls",
            "Times the progress watchdog restarted the replica (XINF_STALL_TIMEOUT)",
            labels=labels,
        )
        served = CounterMetricFamily(
            "xinf_served_units",
            "What rerank, audio and image models served: documents, audio_seconds_in, audio_seconds_out, images",
            labels=[*labels, "unit"],
        )
        for model in list(self.models.values()):
            for index, stats in sorted(model.stats.items()):
                values = [model.uid, str(index)]
                requests.add_metric(values, stats.requests)
                for kind, count in sorted(stats.errors.items()):
                    errors.add_metric([*values, kind], count)
                prompt.add_metric(values, stats.prompt_tokens)
                cached.add_metric(values, stats.cached_tokens)
                completion.add_metric(values, stats.completion_tokens)
                running.add_metric(values, stats.running)
                waiting.add_metric(values, stats.waiting)
                latency.add_metric(values, stats.latency.cumulative(), stats.latency.sum)
                ttft.add_metric(values, stats.ttft.cumulative(), stats.ttft.sum)
                for unit, amount in sorted(stats.units.items()):
                    served.add_metric([*values, unit], amount)
            for replica in list(model.replicas):
                values = [model.uid, str(replica.index)]
                for name in STATUSES:
                    status.add_metric([*values, name], 1.0 if replica.status == name else 0.0)
                up.add_metric(values, 1.0 if replica.ready else 0.0)
                restarts.add_metric(values, model.restart_count.get(replica.index, 0))
                stalls.add_metric(values, model.stalls.get(replica.index, 0))
        yield from (
            requests, errors, prompt, cached, completion, running, waiting, latency, ttft, status, up, restarts, stalls, served
        )  # fmt: skip


class PoolCollector:
    """The warm pool (``xinf.warmpool``): its workers, and the launches that took one or started cold."""

    def __init__(self, pool: WarmPool):
        self.pool = pool

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        workers = GaugeMetricFamily(
            "xinf_warm_pool_workers", "Pre-started replica processes, idle or starting", labels=["engine", "state"]
        )
        for (engine, state), count in sorted(self.pool.counts().items()):
            workers.add_metric([engine, state], count)
        launches = CounterMetricFamily(
            "xinf_replica_starts", "Replica processes started on this machine: warm (a pooled worker) or cold",
            labels=["start"],
        )  # fmt: skip
        launches.add_metric(["warm"], self.pool.taken)
        launches.add_metric(["cold"], self.pool.cold)
        yield from (workers, launches)


class Exporter:
    """Renders the text exposition; built on the first scrape."""

    def __init__(self, models: Mapping[str, RunningModel], pool: WarmPool | None = None):
        from prometheus_client import CollectorRegistry, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(models))
        if pool is not None:
            self.registry.register(PoolCollector(pool))
        ProcessCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
