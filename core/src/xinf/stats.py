"""What each replica served, kept as plain numbers on the request path.

The request path only adds to ints and floats on a ``ReplicaStats`` (no label
lookups, no locks: everything runs on the server's event loop).
``xinf.metrics`` reads them when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        "cached_tokens",
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
        self.cached_tokens = 0  # prompt tokens the engine took from its prefix cache (where it says)
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
