"""CPU replicas with placed cores against unplaced ones, under a steady concurrent load, in the same run.

    python -m bench cpu [--engines transformers llamacpp] [--replicas 2 3] [--size 100m] [--rounds 3]

Two `xinf serve` processes run side by side: one places cores (the default:
each replica pinned to its share of the machine, its engine's threads sized to
it), the other does not (``XINF_CPU_CORES_PER_REPLICA=0``: every replica's
engine sizes its threads to the whole machine, as before core placement).  For
each replica count the same model is launched on one server, loaded with
``--streams`` concurrent streamed requests per replica until ``--requests`` per
replica have finished, and terminated; then the other server takes its turn (the
side that goes first alternates by round).  No engine thread option is given:
the thread counts are the engines' own choice on each side, as a user gets them.

Each request's latency is its whole duration (first byte to last token); p50 and
p99 are over every request of every round, tokens/s the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import OverHttp
from bench.common import Settings, quiet_env, run_loop, say, table
from bench.engines import module


def env(placed: bool) -> dict[str, str]:
    """A server's environment: quiet, and no thread variable of ours, so the engines choose."""
    out = {k: v for k, v in quiet_env(1).items() if k not in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND")}
    out = {**{k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}, **out}
    if not placed:
        out["XINF_CPU_CORES_PER_REPLICA"] = "0"
    return out


async def steady(url: str, uid: str, tokens: int, streams: int, requests: int) -> tuple[list[float], int, float]:
    """``streams`` clients each sending one request after another until ``requests`` are done."""
    client = OverHttp(url, uid, tokens)
    latencies: list[float] = []
    produced = 0
    left = requests

    async def worker(first: int) -> None:
        nonlocal left, produced
        i = first
        while left > 0:
            left -= 1
            start = time.perf_counter()
            n, _ttft = await client.one(i)
            latencies.append(time.perf_counter() - start)
            produced += n
            i += streams

    try:
        await asyncio.gather(*(worker(s) for s in range(streams)))  # warm-up: each stream's first request
        latencies.clear()
        produced = 0
        left = requests
        start = time.perf_counter()
        await asyncio.gather(*(worker(1000 + s) for s in range(streams)))
        wall = time.perf_counter() - start
    finally:
        await client.close()
    return latencies, produced, wall


def launch_body(engine: str, settings: Settings, replicas: int, uid: str) -> dict[str, Any]:
    bench_engine = module(engine)
    body = bench_engine.launch_body(bench_engine.model(settings), settings)
    for option in ("threads", "n_threads"):  # the engine sizes its threads: that is what is measured
        body.pop(option, None)
    return {**body, "model_uid": uid, "replica": replicas}


def one_turn(server: Any, body: dict[str, Any], settings: Settings, streams: int, requests: int) -> dict[str, Any]:
    uid = body["model_uid"]
    response = server.http.post("/v1/models", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"launch failed ({response.status_code}): {response.text}")
    try:
        described = server.http.get(f"/v1/models/{uid}").json()["replicas"]
        latencies, produced, wall = run_loop(steady(server.url, uid, settings.tokens, streams, requests))
    finally:
        server.http.delete(f"/v1/models/{uid}")
    return {
        "latencies": latencies,
        "tokens_per_s": produced / wall,
        "cores": [r.get("cores") or [] for r in described],
        "threads": [r.get("threads") for r in described],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    engines: list[str], replica_counts: list[int], settings: Settings, rounds: int, streams: int, requests: int
) -> list[dict[str, Any]]:
    from xinf.testing.server import ServerProcess

    results = []
    with tempfile.TemporaryDirectory(prefix="xinf-bench-cpu-") as tmp:
        servers = {
            side: ServerProcess(Path(tmp) / side, env=env(side == "placed"), startup_timeout=120).start()
            for side in ("placed", "unplaced")
        }
        try:
            for engine in engines:
                for replicas in replica_counts:
                    turns: dict[str, list[dict[str, Any]]] = {"placed": [], "unplaced": []}
                    for r in range(rounds):
                        order = ["placed", "unplaced"] if r % 2 == 0 else ["unplaced", "placed"]
                        for side in order:
                            say(f"cpu: {engine}, {replicas} replicas, {side}, round {r + 1}/{rounds}")
                            body = launch_body(engine, settings, replicas, f"cpu-{side}")
                            turns[side].append(
                                one_turn(servers[side], body, settings, streams * replicas, requests * replicas)
                            )
                    results.append({"engine": engine, "replicas": replicas, "turns": turns})
        finally:
            for server in servers.values():
                server.stop()
    return results


def report(results: list[dict[str, Any]], settings: Settings, streams: int) -> str:
    from xinf.cores import ranges

    rows = []
    for r in results:
        for side in ("placed", "unplaced"):
            turns = r["turns"][side]
            latencies = [x for t in turns for x in t["latencies"]]
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            rate = statistics.median(t["tokens_per_s"] for t in turns)
            cores = " / ".join(ranges(c) or "all" for c in turns[0]["cores"])
            threads = "/".join(str(t) if t is not None else "?" for t in turns[0]["threads"])
            figures = (f"{p50:.0f}", f"{p99:.0f}", f"{p99 / p50:.2f}", f"{rate:.1f}")
            rows.append((r["engine"], r["replicas"], side, cores, threads, len(latencies), *figures))
    headers = (
        "engine", "replicas", "side", "cores per replica", "threads per replica", "requests",
        "p50 ms", "p99 ms", "p99/p50", "tok/s",
    )  # fmt: skip
    return (
        f"CPU replicas, placed cores against unplaced ({streams} streams per replica, {settings.tokens} output "
        f"tokens per request, models of preset {settings.size})\n\n" + table(headers, rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench cpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", nargs="+", choices=["transformers", "llamacpp"], default=["transformers"])
    parser.add_argument("--replicas", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--size", default="100m", help="tools/tinymodels.py preset: 100m or tiny")
    parser.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    parser.add_argument("--streams", type=int, default=2, help="concurrent streams per replica")
    parser.add_argument("--requests", type=int, default=20, help="requests per replica per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns each side takes")
    parser.add_argument("--max-seqs", type=int, default=4, help="requests each replica decodes together")
    args = parser.parse_args(argv)
    settings = Settings(size=args.size, tokens=args.tokens, max_seqs=args.max_seqs, context=512)
    before = os.getloadavg()[0]
    results = measure(args.engines, args.replicas, settings, args.rounds, args.streams, args.requests)
    print(f"{os.cpu_count()} CPUs; 1-minute load average {before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(report(results, settings, args.streams))
    return 0
