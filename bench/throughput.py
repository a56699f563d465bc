"""Output tokens/s and time to first token: xinf against the same engine called in-process.

Runs in the engine's interpreter (``python -m bench _child throughput ENGINE``).
Both sides are up at once: a real ``xinf serve`` with the model launched (the
client streams chat requests over HTTP: SSE, the server, the replica process
and its socket; the client is ``bench.client``'s, which takes as little of the
engine's cores as it can) and the engine loaded in this process.  For each round and
each concurrency the two sides take turns on the same requests, the side that
goes first alternating from round to round, so that a change in the machine's
load hits both alike.  Every request writes exactly ``tokens`` tokens.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.client import OverHttp
from bench.common import Settings, quiet_env, run_batch, run_loop, say
from bench.engines import module


async def compare(
    engine: Any, path: Path, settings: Settings, url: str, concurrency: list[int], rounds: int, requests: int
) -> list[dict[str, Any]]:
    direct = await engine.direct(path, settings)
    xinf = OverHttp(url, "bench", settings.tokens)
    sides = {"direct": direct, "xinf": xinf}
    rows = {c: {"concurrency": c, "requests": max(requests, c)} for c in concurrency}
    try:
        top = max(concurrency)
        for side in sides.values():  # warm-up: first requests pay for caches, threads, connections, batch shapes
            await run_batch(side.one, top, top, first=1_000_000)
        first = 0
        for r in range(rounds):
            for c in concurrency:
                count = rows[c]["requests"]
                for name in ("direct", "xinf") if r % 2 == 0 else ("xinf", "direct"):
                    sample = await run_batch(sides[name].one, c, count, first=first)
                    if sample.tokens != count * settings.tokens:
                        raise RuntimeError(f"{name} wrote {sample.tokens} tokens, not {count} x {settings.tokens}")
                    rows[c].setdefault(f"{name}_rate", []).append(sample.rate)
                    rows[c].setdefault(f"{name}_ttft", []).append(sample.ttft)
                    say(
                        f"  {engine.NAME} round {r + 1} c={c:<2} {name:<6} {sample.rate:7.1f} tok/s, "
                        f"TTFT {sample.ttft * 1000:7.1f} ms"
                    )
                first += count  # both sides got the same prompts, each new to its engine
    finally:
        await xinf.close()
        await direct.close()
    return list(rows.values())


def measure(engine_name: str, settings: Settings, concurrency: list[int], rounds: int, requests: int) -> dict[str, Any]:
    from xinf.testing.server import ServerProcess

    engine = module(engine_name)
    path = engine.model(settings)
    say(f"{engine.LABEL}: {engine.describe(settings)}, xinf vs in-process, concurrency {concurrency}")
    env = quiet_env(settings.threads)
    with tempfile.TemporaryDirectory(prefix="xinf-bench-") as home, ServerProcess(Path(home), env=env) as server:
        server.launch(model_uid="bench", **engine.launch_body(path, settings))
        rows = run_loop(compare(engine, path, settings, server.url, concurrency, rounds, requests))
    return {"engine": engine_name, "label": engine.LABEL, "model": engine.describe(settings), "rows": rows}
