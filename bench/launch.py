"""Model launch time until the first token: ``xinf launch`` against the raw engine in a fresh process.

Runs in the engine's interpreter (``python -m bench _child launch ENGINE``).
xinf: with a server already up, ``POST /v1/models`` (which returns once the
replica is loaded and has answered a health check), then one streamed chat
request until its first token; "cold" on a server without the warm pool
(``XINF_WARM_POOL=0``: a new replica process, its interpreter start and the
engine's imports), "warm" on a server whose pool for the engine started with
it (``XINF_WARM_POOL_ENGINES``) and has refilled since the last launch (the
bench waits for its idle worker, as a server between launches has one).
Baseline: a fresh interpreter that imports the engine, loads the same model
with the same settings and streams the same request until its first token
(``python -m bench.first_token``, which imports the engine's module only).  The three take turns, the side
that goes first rotating by round.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.client import Connection, has_text
from bench.common import Settings, messages, quiet_env, say
from bench.engines import first_token_seconds, module

SIDES = ("direct", "cold", "warm")


def xinf_first_token(server: Any, uid: str, body: dict[str, Any]) -> tuple[float, float]:
    """(seconds until the launch returned, seconds until the first token).

    The request goes out on ``bench.client``'s bare connection: the engine alone has no client to make (an httpx
    client costs 20-80 ms here, mostly its TLS context).
    """
    request = {"model": uid, "messages": messages(0), "max_tokens": 4, "ignore_eos": True, "stream": True}
    host, port = server.url.removeprefix("http://").rsplit(":", 1)

    async def first_token() -> float:
        connection = Connection(host, int(port))
        try:
            return (await connection.post("/v1/chat/completions", json.dumps(request).encode(), has_text))[1]
        finally:
            connection.close()

    start = time.perf_counter()
    server.launch(model_uid=uid, **body)
    launched = time.perf_counter() - start
    first = asyncio.run(first_token())
    if not first:
        raise RuntimeError(f"{uid}: no token")
    return launched, first - start


def pool_idle(server: Any, engine: str) -> bool:
    """Whether the server's warm pool has an idle worker for ``engine`` (its /metrics)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    line = f'xinf_warm_pool_workers{{engine="{engine}",state="idle"}} '
    return any(s.startswith(line) and float(s.split()[-1]) >= 1 for s in text.splitlines())


def wait_for_pool(server: Any, engine: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not pool_idle(server, engine):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm pool of {engine} has no idle worker after {timeout:g}s")
        time.sleep(0.1)


def measure(engine_name: str, settings: Settings, rounds: int) -> dict[str, Any]:
    from xinf.testing.server import ServerProcess

    engine = module(engine_name)
    path = engine.model(settings)
    body = engine.launch_body(path, settings)
    xinf_engine = body["model_engine"]
    say(f"{engine.LABEL}: launch until the first token, {rounds} rounds")
    first: dict[str, list[float]] = {side: [] for side in SIDES}
    launched: dict[str, list[float]] = {"cold": [], "warm": []}
    env = quiet_env(settings.threads)
    with (
        tempfile.TemporaryDirectory(prefix="xinf-bench-") as home,
        ServerProcess(Path(home) / "cold", env={**env, "XINF_WARM_POOL": "0"}) as cold,
        ServerProcess(Path(home) / "warm", env={**env, "XINF_WARM_POOL_ENGINES": xinf_engine}) as warm,
    ):
        servers = {"cold": cold, "warm": warm}
        for r in range(rounds):
            for side in SIDES[r % 3 :] + SIDES[: r % 3]:
                if side == "direct":
                    first["direct"].append(first_token_seconds(engine_name, settings))
                    say(f"  {engine.NAME} round {r + 1} direct     {first['direct'][-1]:.2f} s")
                    continue
                server = servers[side]
                if side == "warm":
                    wait_for_pool(server, xinf_engine)  # the pool that started with the server, the first time
                uid = f"launch-{r}"
                ready, token = xinf_first_token(server, uid, body)
                launched[side].append(ready)
                first[side].append(token)
                took = server.http.get(f"/v1/models/{uid}").json()["replicas"][0]["warm"]
                note = "" if took == (side == "warm") else f" (replica warm: {took}; not what this side measures)"
                say(
                    f"  {engine.NAME} round {r + 1} xinf {side:5s} {token:.2f} s (launch returned after {ready:.2f} s){note}"
                )
                server.http.delete(f"/v1/models/{uid}").raise_for_status()
                if side == "warm":
                    wait_for_pool(server, xinf_engine)  # its refill must not compete with the next side's turn
    return {
        "engine": engine_name,
        "label": engine.LABEL,
        "model": engine.describe(settings),
        "direct": first["direct"],
        "xinf": first["cold"],
        "xinf_launch": launched["cold"],
        "warm": first["warm"],
        "warm_launch": launched["warm"],
    }
