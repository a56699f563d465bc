"""What both GPU checks share: the machine, generated models, a real ``xinf serve``, memory per replica.

Without a GPU (a dry run) the same code runs against ``XINF_SIMULATED_GPUS``
and measures each replica's resident memory instead of its GPU memory, and
the report says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpucheck import smi

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"


@dataclass
class Context:
    """One check run: where it writes, whether there is a GPU, how long it may take."""

    outdir: Path
    gpu: bool
    deadline: float  # time.monotonic() by which the check should be done
    home: Path = field(default_factory=lambda: Path("/tmp/xinf-gpucheck"))
    models: dict[str, Path] = field(default_factory=dict)
    only: set[str] = field(default_factory=set)  # steps to run; empty: all

    @property
    def memory_source(self) -> str:
        return "nvidia-smi" if self.gpu else "RSS (no GPU)"

    def wanted(self, step: str) -> bool:
        return not self.only or step in self.only

    def left(self) -> float:
        return self.deadline - time.monotonic()


def detect_gpu() -> bool:
    gpus = smi.gpus()
    return bool(gpus)


def machine() -> dict[str, Any]:
    """What the figures ran on: CPU, memory, Python, GPUs and driver (nvidia-smi's own words)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["nvidia_smi_L"] = smi.raw(["-L"]).strip()
    driver = smi.raw(["--query-gpu=driver_version", "--format=csv,noheader"]).strip()
    info["driver"] = driver.splitlines()[0] if driver else None
    return info


def versions(names: Iterable[str]) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_models(specs: dict[str, list[str]]) -> dict[str, Path]:
    """Generate models with tools/tinymodels.py, all at once (one process each): {label: path}.

    ``specs`` maps a label to tinymodels' command line (``["gguf-1b", "--ftype", "q8_0"]``).
    """

    def one(args: list[str]) -> Path:
        out = subprocess.run(
            [sys.executable, str(TOOLS / "tinymodels.py"), *args], capture_output=True, text=True, timeout=900
        )
        if out.returncode != 0:
            raise RuntimeError(f"tinymodels {' '.join(args)} failed:\n{out.stderr[-2000:]}")
        return Path(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = {label: pool.submit(one, args) for label, args in specs.items()}
        return {label: f.result() for label, f in futures.items()}


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ the server


def server_env(ctx: Context, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "XINF_LOG_LEVEL": "INFO",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    if not ctx.gpu:
        # A dry run: one simulated GPU the size of an H200, so placement runs as it would there.
        env["XINF_SIMULATED_GPUS"] = os.environ.get("GPUCHECK_SIMULATED_GPUS", "140GiB")
    env.update(extra or {})
    return env


def start_server(ctx: Context, name: str, extra_env: dict[str, str] | None = None) -> Any:
    from xinf.testing.server import ServerProcess

    home = ctx.home / name
    home.mkdir(parents=True, exist_ok=True)
    return ServerProcess(home, env=server_env(ctx, extra_env), startup_timeout=120).start()


def run_steps(ctx: Context, report: Any, name: str, steps: list[tuple[str, str, Any]], profile: Any) -> None:
    """Run each wanted ``(name, title, fn(ctx, report, server, profile))`` against one server; a step the run's
    time no longer allows is reported as skipped, with the ``--only`` that reruns it."""
    server = start_server(ctx, name)
    try:
        for step, title, fn in steps:
            if not ctx.wanted(step):
                continue
            if ctx.left() < 20:
                report.heading(title)
                report.add("**Skipped**: the run's time is up (rerun with `--only " + step + "`).")
                continue
            report.step(step, title, lambda fn=fn: fn(ctx, report, server, profile))
    finally:
        server.stop()


def xinf_cli(server: Any, *args: str, timeout: float = 120) -> Any:
    """Run ``xinf ARGS -e URL --json`` against the server and return its JSON."""
    cmd = [sys.executable, "-m", "xinf.cli.main", *args]
    if args and args[0] not in ("estimate",):
        cmd += ["-e", server.url]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=timeout, env=server.env)
    if out.returncode != 0:
        raise RuntimeError(f"xinf {' '.join(args)} failed ({out.returncode}): {out.stderr[-1500:]}")
    return json.loads(out.stdout)


def launch(server: Any, body: dict[str, Any], wait: bool = True) -> tuple[int, dict[str, Any]]:
    """POST /v1/models: (status, JSON)."""
    params = {} if wait else {"wait_ready": "false"}
    response = server.http.post("/v1/models", json=body, params=params, timeout=900)
    try:
        data = response.json()
    except ValueError:
        data = {"text": response.text}
    return response.status_code, data


def launch_ok(server: Any, body: dict[str, Any], wait: bool = True) -> str:
    status, data = launch(server, body, wait)
    if status != 200:
        raise RuntimeError(f"launch failed ({status}): {json.dumps(data)[:1500]}")
    return str(data["model_uid"])


def describe(server: Any, uid: str) -> dict[str, Any]:
    response = server.http.get(f"/v1/models/{uid}")
    response.raise_for_status()
    return dict(response.json())


def wait_ready(server: Any, uids: list[str], timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Poll until every model's replicas are ready; raise with the model's error or the replica logs."""
    deadline = time.monotonic() + timeout
    while True:
        described = {}
        for uid in uids:
            if server.http.get(f"/v1/models/{uid}").status_code == 404:  # a failed launch is forgotten
                raise RuntimeError(f"{uid} failed to launch; the server's log ends:\n{server.log()[-3000:]}")
            described[uid] = describe(server, uid)
        failed = {uid: d for uid, d in described.items() if d.get("status") in ("error", "failed")}
        if failed:
            uid, d = next(iter(failed.items()))
            raise RuntimeError(f"{uid} failed to launch: {d.get('error')}\n{replica_log_tail(d)}")
        if all(r["status"] == "ready" for d in described.values() for r in d["replicas"]) and all(
            d["replicas"] for d in described.values()
        ):
            return described
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {timeout:.0f} s: {json.dumps(described)[:2000]}")
        time.sleep(0.5)


def replica_log_tail(described: dict[str, Any], chars: int = 2000) -> str:
    tails = []
    for r in described.get("replicas", []):
        try:
            tails.append(Path(r["log"]).read_text(errors="replace")[-chars:])
        except (OSError, KeyError, TypeError):
            pass
    return "\n".join(tails)


def terminate(server: Any, uid: str) -> None:
    server.http.delete(f"/v1/models/{uid}", timeout=120)


# ------------------------------------------------------------------------------------------ memory


def memory(ctx: Context, pids: Iterable[int]) -> dict[int, int | None]:
    """Each process's memory now: on the GPU (nvidia-smi) or, without one, resident memory."""
    pids = list(pids)
    if ctx.gpu:
        apps = smi.apps() or {}
        return {pid: apps.get(pid) for pid in pids}
    return {pid: smi.rss(pid) for pid in pids}


def settled_memory(ctx: Context, pids: Iterable[int], timeout: float = 15.0) -> dict[int, int | None]:
    """Memory per process once two readings half a second apart agree (allocators settle after a request)."""
    pids = list(pids)
    last = memory(ctx, pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = memory(ctx, pids)
        if now == last:
            return now
        last = now
    return last


def device_used() -> int | None:
    """Memory in use on GPU 0 (all processes); None without a GPU."""
    gpus = smi.gpus()
    return gpus[0].used if gpus else None


def wait_gone(pids: Iterable[int], timeout: float = 60) -> bool:
    """Until the processes have exited and nvidia-smi lists none of them."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        apps = smi.apps() or {}
        if not any(smi.alive(p) for p in pids) and not (pids & set(apps)):
            return True
        time.sleep(0.5)
    return False


def replica_rows(ctx: Context, described: dict[str, Any]) -> list[dict[str, Any]]:
    """Per replica: pid, devices, CUDA_VISIBLE_DEVICES as the process really got it, reserved and measured."""
    replicas = described["replicas"]
    measured = settled_memory(ctx, [r["pid"] for r in replicas if r.get("pid")])
    rows = []
    for r in replicas:
        pid = r.get("pid")
        rows.append(
            {
                "replica": r["index"],
                "pid": pid,
                "devices": r.get("devices"),
                "cuda_visible_devices": smi.environ(pid).get("CUDA_VISIBLE_DEVICES") if pid else None,
                "reserved": sum(r.get("reserved") or []),
                "gpu_layers": r.get("gpu_layers"),
                "measured": measured.get(pid) if pid else None,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------ requests


def chat_once(server: Any, model: str, tokens: int = 16) -> dict[str, Any]:
    """One chat request through the openai client, plain and streamed."""
    client = server.openai()
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=tokens, temperature=0
    )
    chunks = 0
    text = ""
    usage = None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return {
        "completion_tokens": reply.usage.completion_tokens if reply.usage else None,
        "finish_reason": reply.choices[0].finish_reason,
        "stream_chunks": chunks,
        "stream_completion_tokens": usage,
        "stream_text_chars": len(text),
    }


def long_prompt_request(server: Any, model: str, words: int, tokens: int = 4) -> None:
    """A request with a long prompt: the engine's activation peak (prefill) happens before memory is read."""
    prompt = " ".join(f"word{i % 97}" for i in range(words))
    server.http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens},
        timeout=300,
    ).raise_for_status()


def throughput(url: str, model: str, streams: int, tokens: int, rounds: int) -> list[float]:
    """Output tokens/s over HTTP with ``streams`` concurrent streamed chats (bench's client side)."""
    from bench.common import OverHttp, run_batch, run_loop

    async def go() -> list[float]:
        side = OverHttp(url, model, tokens)
        try:
            rates = []
            for r in range(rounds):
                sample = await run_batch(side.one, streams, streams, first=r * streams)
                rates.append(sample.rate)
            return rates
        finally:
            await side.close()

    return list(run_loop(go()))
