"""The server's own overhead, measured with the test engine.

Runs the same requests (a) against the test engine called in-process, the way a
replica calls it, and (b) through a real `xinf serve` over HTTP (replica process,
socket, JSON, SSE), then prints latency and throughput for both and the ratio.

    python -m bench overhead [--requests 400] [--concurrency 1 8] [--tokens 16]

With --token-delay 0 the engine costs nothing, so the HTTP figure is pure
overhead; with a delay (e.g. 0.01 s/token, a 100 tokens/s model) the ratio
shows what a user would feel.  Figures vary with machine load: compare ratios
from one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.testing.server import ServerProcess
from xinf.types import GenerateRequest, Placement


async def in_process(requests: int, concurrency: int, tokens: int, delay: float) -> list[float]:
    host = PluginHost.discover(only=["test"])
    spec = Registry(None).candidates("xinf-test-chat")[0]
    model = host.hook("test", "load")(spec=spec, options={"token_delay": delay}, placement=Placement())
    generate = host.hook("test", "generate")
    messages = [{"role": "user", "content": "how fast is this?"}]

    async def one() -> float:
        start = time.perf_counter()
        async for _ in generate(model=model, request=GenerateRequest(messages=messages, max_tokens=tokens)):
            pass
        return time.perf_counter() - start

    return await run(one, requests, concurrency)


async def over_http(url: str, requests: int, concurrency: int, tokens: int, stream: bool) -> list[float]:
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": "how fast is this?"}],
        "max_tokens": tokens,
        "stream": stream,
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one() -> float:
            start = time.perf_counter()
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
            else:
                response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()
            return time.perf_counter() - start

        await run(one, 20, concurrency)  # warm up connections and the replica
        return await run(one, requests, concurrency)


async def run(one, requests: int, concurrency: int) -> list[float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await one())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.append(time.perf_counter() - start)  # last item: wall time
    return latencies


def summary(latencies: list[float]) -> tuple[float, float]:
    wall = latencies[-1]
    times = latencies[:-1]
    return statistics.median(times) * 1000, len(times) / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench overhead", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay", type=float, nargs="+", default=[0.0, 0.01])
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as home:
        server = ServerProcess(Path(home)).start()
        try:
            for delay in args.token_delay:
                server.http.delete("/v1/models/bench")
                server.launch(model_name="xinf-test-chat", model_uid="bench", token_delay=delay)
                requests = args.requests if delay == 0 else max(40, args.requests // 10)
                for concurrency in args.concurrency:
                    base = summary(asyncio.run(in_process(requests, concurrency, args.tokens, delay)))
                    for stream in (False, True):
                        http = summary(asyncio.run(over_http(server.url, requests, concurrency, args.tokens, stream)))
                        rows.append((delay, concurrency, stream, base, http))
        finally:
            server.stop()

    print(f"{args.tokens} tokens per request; p50 latency in ms, throughput in requests/s")
    print(
        f"{'delay/token':>11} {'conc':>4} {'stream':>6} | {'engine p50':>10} {'xinf p50':>9} "
        f"{'added ms':>8} | {'engine rps':>10} {'xinf rps':>9} {'xinf/engine':>11}"
    )
    for delay, concurrency, stream, (b50, brps), (h50, hrps) in rows:
        print(
            f"{delay:>11.3f} {concurrency:>4} {('yes' if stream else 'no'):>6} | {b50:>10.2f} {h50:>9.2f} "
            f"{h50 - b50:>8.2f} | {brps:>10.0f} {hrps:>9.0f} {hrps / brps:>11.3f}"
        )
    return 0
