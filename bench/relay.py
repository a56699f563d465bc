"""The relay's own CPU cost per token: server process and replica process, with the test engine.

    python -m bench relay [--streams 64] [--requests 512] [--tokens 256] [--rounds 3]

One `xinf serve`; the test engine with no token delay (the engine costs next to nothing, so the CPU the server
and the replica spend is the relay's), ``--streams`` streamed chat requests in flight.  The figure is CPU time
(user + system, from /proc) divided by the tokens relayed, for the server process and for the replica.  A
request also costs the server a fixed amount (HTTP parsing, routing, the request to the replica, headers): the
same requests with one output token each show it, as server CPU per request.

Two models side by side in the same server: ``batched`` (frames carry every token the engine has ready, the
default) and ``one token per frame`` (``XINF_RELAY_BATCH=0`` in the replica: each token its own frame and its
own SSE write, the relay of earlier releases); the two take turns, the side going first alternating by round.

The client is a minimal HTTP/1.1 keep-alive client that reads bytes and counts nothing per token, so that it
takes as little of the machine's CPU as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.client import Connection, completion_tokens
from bench.common import quiet_env, run_loop, say, table

SIDES = {"batched": {}, "one token per frame": {"XINF_RELAY_BATCH": "0"}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, uid: str, streams: int, requests: int, tokens: int) -> tuple[int, float]:
    """``requests`` streamed chat requests, ``streams`` at a time: (completion tokens, wall seconds)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(
        {
            "model": uid,
            "messages": [{"role": "user", "content": "relay as fast as you can"}],
            "max_tokens": tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    left = requests
    produced = 0

    async def worker() -> None:
        nonlocal left, produced
        connection = Connection(host, int(port))
        try:
            while left > 0:
                left -= 1
                tail, _ = await connection.post("/v1/chat/completions", body)
                produced += completion_tokens(tail)
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(streams)))
    return produced, time.perf_counter() - start


def replica_pid(server: Any, uid: str) -> int:
    return int(server.http.get(f"/v1/models/{uid}").json()["replicas"][0]["pid"])


def measure(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    from xinf.testing.server import ServerProcess

    results: dict[str, dict[str, list[float]]] = {
        side: {"server": [], "replica": [], "rate": [], "request": []} for side in SIDES
    }
    with tempfile.TemporaryDirectory(prefix="xinf-bench-relay-") as tmp:
        server = ServerProcess(Path(tmp), env={**os.environ, **quiet_env(1)}).start()
        assert server.proc is not None
        try:
            uids = {}
            for n, (side, envs) in enumerate(SIDES.items()):
                uids[side] = server.launch(
                    model_name="xinf-test-chat", model_uid=f"relay-{n}", token_delay=0, envs=envs
                )
            pids = {side: replica_pid(server, uid) for side, uid in uids.items()}
            for uid in uids.values():  # warm-up: connections, caches
                run_loop(load(server.url, uid, args.streams, args.streams, args.tokens))
            for r in range(args.rounds):
                order = list(SIDES) if r % 2 == 0 else list(reversed(SIDES))
                for side in order:
                    server_before, replica_before = cpu_seconds(server.proc.pid), cpu_seconds(pids[side])
                    tokens, wall = run_loop(load(server.url, uids[side], args.streams, args.requests, args.tokens))
                    server_cpu = cpu_seconds(server.proc.pid) - server_before
                    replica_cpu = cpu_seconds(pids[side]) - replica_before
                    if tokens != args.requests * args.tokens:
                        raise RuntimeError(f"{side}: {tokens} tokens, not {args.requests} x {args.tokens}")
                    results[side]["server"].append(server_cpu / tokens * 1e6)
                    results[side]["replica"].append(replica_cpu / tokens * 1e6)
                    results[side]["rate"].append(tokens / wall)
                    before = cpu_seconds(server.proc.pid)
                    run_loop(load(server.url, uids[side], args.streams, args.requests, 1))
                    results[side]["request"].append((cpu_seconds(server.proc.pid) - before) / args.requests * 1e6)
                    say(
                        f"relay round {r + 1} {side:<20} server {server_cpu / tokens * 1e6:5.2f} us/token, "
                        f"replica {replica_cpu / tokens * 1e6:5.2f} us/token, {tokens / wall:8.0f} tokens/s"
                    )
        finally:
            server.stop()
    return results


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    med = {side: {k: statistics.median(v) for k, v in figures.items()} for side, figures in results.items()}
    rows = [
        (side, f"{m['server']:.2f}", f"{m['replica']:.2f}", f"{m['rate']:.0f}", f"{m['request']:.0f}")
        for side, m in med.items()
    ]
    new, old = med["batched"], med["one token per frame"]
    rows.append(
        (
            "batched / one token per frame",
            f"{new['server'] / old['server']:.2f}",
            f"{new['replica'] / old['replica']:.2f}",
            f"{new['rate'] / old['rate']:.2f}",
            f"{new['request'] / old['request']:.2f}",
        )
    )
    headers = (
        "relay",
        "server CPU us/token",
        "replica CPU us/token",
        "tokens/s (client-bound)",
        "server CPU us/request (1-token answers)",
    )
    return (
        f"Relay CPU per token: test engine, no token delay, {args.streams} streams, {args.tokens} tokens per "
        f"request, {args.requests} requests per round, medians of {args.rounds} rounds\n\n" + table(headers, rows)
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench relay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--requests", type=int, default=512, help="requests per round and side")
    parser.add_argument("--tokens", type=int, default=256, help="output tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    before = os.getloadavg()[0]
    results = measure(args)
    print(f"{os.cpu_count()} CPUs; 1-minute load average {before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(report(results, args))
    return 0
