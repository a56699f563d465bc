"""Request metrics kept as plain numbers, exported in Prometheus format on demand.

The request path only adds to ints and floats on a ``ReplicaStats`` (no label
lookups, no locks: everything runs on the server's event loop).
``prometheus_client`` is imported when ``/metrics`` is first scraped, so a
server that is never scraped never loads it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xinf.manager import ModelManager

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STATUSES = ("starting", "ready", "unhealthy", "dead", "failed", "stopped")


class Histogram:
    """Bucket counts and a sum; ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class ReplicaStats:
    """What one replica of a model served; survives the replica's restarts."""

    __slots__ = (
        "completion_tokens",
        "errors",
        "latency",
        "prompt_tokens",
        "requests",
        "running",
        "ttft",
        "units",
        "waiting",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.running = 0  # producing output
        self.waiting = 0  # sent to the replica, no output yet
        self.latency = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.units: dict[str, float] = {}  # what other model types served: documents, audio seconds, images

    def count(self, result: object) -> None:
        """Add what a rerank, audio or image result served (``xinf.operations`` results say)."""
        unit, amount = result.units()  # type: ignore[attr-defined]
        self.units[unit] = self.units.get(unit, 0.0) + amount

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Collector:
    """A prometheus_client collector reading the manager's models at scrape time."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        labels = ["model", "replica"]
        requests = CounterMetricFamily("xinf_requests", "Requests sent to a model replica", labels=labels)
        errors = CounterMetricFamily(
            "xinf_request_errors", "Requests that ended with an error, by error type", labels=[*labels, "type"]
        )
        prompt = CounterMetricFamily("xinf_prompt_tokens", "Prompt tokens processed", labels=labels)
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
        served = CounterMetricFamily(
            "xinf_served_units",
            "What rerank, audio and image models served: documents, audio_seconds_in, audio_seconds_out, images",
            labels=[*labels, "unit"],
        )
        for model in list(self.manager.models.values()):
            for index, stats in sorted(model.stats.items()):
                values = [model.uid, str(index)]
                requests.add_metric(values, stats.requests)
                for kind, count in sorted(stats.errors.items()):
                    errors.add_metric([*values, kind], count)
                prompt.add_metric(values, stats.prompt_tokens)
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
        yield from (requests, errors, prompt, completion, running, waiting, latency, ttft, status, up, restarts, served)


class Exporter:
    """Renders the text exposition; built on the first scrape."""

    def __init__(self, manager: ModelManager):
        from prometheus_client import CollectorRegistry, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(manager))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
