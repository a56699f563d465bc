"""Issue 18: inventory, placement, memory estimates and the transformers engine on a real GPU.

Steps (each reported on its own; a failed step does not stop the others):

1. NVML inventory (``xinf devices --json``) against ``nvidia-smi --query-gpu``.
2. The seeds' single-GPU scenario: 3 replicas with 1 GPU -> all on GPU 0; each replica's
   ``CUDA_VISIBLE_DEVICES`` (read from the process) and real memory against its reservation; a
   replica the estimate says does not fit is refused before loading.
3. Estimate against measured, per model at two context lengths and two batch sizes: weights, KV
   cache and the rest, measured in-process through the plugin's own ``load`` (torch's allocator),
   and the total against the xinf replica's memory (nvidia-smi).
4. Chat (plain, streamed) and embeddings through the openai client; tokens/s at 1, 16 and 64
   streams through xinf against transformers' continuous batching in-process, in the same run.
5. A replica killed under load: its memory is freed, the replica comes back, and terminating the
   model returns the device to its memory before the launch (no leaked CUDA contexts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpucheck import common, smi
from gpucheck.report import Report, fmt_ratio, mib, ratio, verdict


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one run: the real one on a GPU, a small one for the CPU dry run."""

    small: list[str]  # tinymodels arguments
    big: list[str]
    embed: list[str]
    contexts: tuple[int, int]
    batches: tuple[int, int]
    streams: tuple[int, ...]
    tokens: int
    rounds: int
    warmup: int  # unmeasured rounds per stream count and side: transformers' first rounds at a new batch size are slow
    prompt_words: int  # a prompt long enough to fill one prefill step (max_batch_tokens 512)
    threads: int | None


GPU = Profile(
    small=["qwen3-100m"],
    big=["llama-1b"],
    embed=["embed-100m"],
    contexts=(2048, 8192),
    batches=(4, 32),
    streams=(1, 16, 64),
    tokens=64,
    rounds=2,
    warmup=2,
    prompt_words=400,
    threads=None,
)
CPU = Profile(
    small=["qwen3-tiny"],
    big=["llama-tiny"],
    embed=["embed-tiny"],
    contexts=(256, 512),
    batches=(2, 4),
    streams=(1, 4),
    tokens=16,
    rounds=1,
    warmup=0,
    prompt_words=60,
    threads=1,
)


def models(ctx: common.Context) -> dict[str, Path]:
    """Generate (or find cached) the profile's models."""
    profile = GPU if ctx.gpu else CPU
    return common.build_models({"small": profile.small, "big": profile.big, "embed": profile.embed})


def engine_options(profile: Profile, context: int, seqs: int) -> dict[str, Any]:
    options: dict[str, Any] = {"context_length": context, "max_num_seqs": seqs, "dtype": "bfloat16"}
    if profile.threads:
        options["threads"] = profile.threads
    return options


def run(ctx: common.Context, report: Report) -> None:
    profile = GPU if ctx.gpu else CPU
    report.add(
        f"Mode: **{'GPU' if ctx.gpu else 'no GPU (CPU dry run: simulated inventory, resident memory instead of GPU memory)'}**"
    )
    report.step("machine", "Machine and versions", lambda: _machine(report))
    report.step("models", "Generated models", lambda: _models(ctx, report, profile))
    if not {"small", "big", "embed"} <= set(ctx.models):
        return
    steps = [
        ("inventory", "1. Inventory: xinf devices --json against nvidia-smi", _inventory),
        (
            "placement",
            "2. One GPU, three replicas; a replica that does not fit; a replica killed under load",
            _placement,
        ),
        ("estimates", "3. Estimate against measured", _estimates),
        ("serving", "4. Chat, embeddings and tokens/s on the device", _serving),
    ]
    common.run_steps(ctx, report, "transformers", steps, profile)


def _machine(report: Report) -> None:
    info = common.machine()
    info["packages"] = common.versions(["xinf", "xinf-transformers", "torch", "transformers", "openai", "nvidia-ml-py"])
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError as exc:
        info["torch_error"] = str(exc)
    info["warm_worker"] = _warm_worker_probe()
    report.record("machine", info)
    report.table(["what", "value"], [(k, v) for k, v in info.items()])


WARM_PROBE = """
import json
from xinf.replica.warm import DRIVERS, driver_loaded, warm_imports
done = warm_imports("transformers")
maps = open("/proc/self/maps").read()
print(json.dumps({"imported": len(done), "driver_mapped": any(lib in maps for lib in DRIVERS),
                  "devices_read": driver_loaded()}))
"""


def _warm_worker_probe() -> Any:
    """What a warm-pool worker's imports do to the GPU driver, devices hidden as in the pool: a worker whose driver
    read the (hidden) devices can serve CPU launches only (xinf.warmpool)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    try:
        done = subprocess.run(
            [sys.executable, "-c", WARM_PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return f"probe failed: {exc}"


def _models(ctx: common.Context, report: Report, profile: Profile) -> None:
    start = time.monotonic()
    ctx.models.update(common.build_models({"small": profile.small, "big": profile.big, "embed": profile.embed}))
    seconds = time.monotonic() - start
    rows = []
    for label, path in ctx.models.items():
        config = _config(path)
        params = (config.get("xinf_tinymodels") or {}).get("parameters")
        rows.append(
            (
                label,
                path.name,
                config.get("model_type"),
                f"{params / 1e9:.3f}B" if params else "-",
                mib(common.size_of(path)),
            )
        )
    report.table(["model", "directory", "architecture", "parameters", "size"], rows)
    report.add(f"Generated in {seconds:.0f} s (bf16, random weights, tools/tinymodels.py).")
    report.record("models", {k: str(v) for k, v in ctx.models.items()})


def _config(path: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------ 1. inventory


def compare_inventory(xinf: list[dict[str, Any]], smi_gpus: list[smi.Gpu] | None) -> list[dict[str, Any]]:
    """Row per device: xinf's NVML figures beside nvidia-smi's, and whether they agree.

    Totals must agree to the MiB (nvidia-smi rounds to MiB); free memory moves
    between the two readings, so it may differ by 2% of the total.
    """
    rows = []
    by_index = {g.index: g for g in smi_gpus or []}
    for d in xinf:
        g = by_index.get(d["index"])
        row: dict[str, Any] = {
            "index": d["index"],
            "xinf_name": d["name"],
            "smi_name": g.name if g else None,
            "xinf_total": d["total_memory"],
            "smi_total": g.total if g else None,
            "xinf_free": d["free_memory"],
            "smi_free": g.free if g else None,
        }
        row["name_ok"] = g is not None and g.name == d["name"]
        row["total_ok"] = g is not None and abs(g.total - d["total_memory"]) < (1 << 20)
        row["free_ok"] = g is not None and abs(g.free - d["free_memory"]) <= 0.02 * g.total
        rows.append(row)
    for index, g in by_index.items():
        if index not in {d["index"] for d in xinf}:
            rows.append({"index": index, "xinf_name": None, "smi_name": g.name, "smi_total": g.total, "name_ok": False})
    return rows


def _inventory(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    data = common.xinf_cli(server, "devices")
    gpus = smi.gpus()
    rows = compare_inventory(data["devices"], gpus)
    report.record("inventory", {"xinf": data, "nvidia_smi": [dataclasses.asdict(g) for g in gpus or []], "rows": rows})
    if not ctx.gpu:
        report.add("no GPU: nvidia-smi is not here; xinf reports the simulated inventory (`XINF_SIMULATED_GPUS`).")
    report.table(
        ["GPU", "name (xinf / nvidia-smi)", "total (xinf / nvidia-smi)", "free (xinf / nvidia-smi)", "agree"],
        [
            (
                r["index"],
                f"{r.get('xinf_name')} / {r.get('smi_name')}",
                f"{mib(r.get('xinf_total'))} / {mib(r.get('smi_total'))}",
                f"{mib(r.get('xinf_free'))} / {mib(r.get('smi_free'))}",
                ("yes" if r.get("name_ok") and r.get("total_ok") and r.get("free_ok") else "NO")
                if ctx.gpu
                else "no GPU",
            )
            for r in rows
        ],
    )
    report.add(
        f"CPU inventory: {data.get('cpu_count')} cores, {mib(data.get('memory_available'))} of {mib(data.get('memory_total'))} available."
    )


# ------------------------------------------------------------------------------------------ 2. placement + 5. kill


def replica_table(report: Report, rows: list[dict[str, Any]], source: str) -> None:
    report.table(
        [
            "replica",
            "pid",
            "devices",
            "CUDA_VISIBLE_DEVICES",
            "reserved (estimate)",
            f"measured ({source})",
            "estimate / measured",
            "verdict",
        ],
        [
            (
                r["replica"],
                r["pid"],
                r["devices"],
                r["cuda_visible_devices"],
                mib(r["reserved"]),
                mib(r["measured"]),
                fmt_ratio(ratio(r["reserved"], r["measured"])),
                verdict(r["reserved"], r["measured"]),
            )
            for r in rows
        ],
    )


def _placement(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    baseline = common.device_used()
    body = {
        "model_path": str(ctx.models["small"]),
        "model_uid": "three",
        "model_engine": "transformers",
        "replica": 3,
        "n_gpu": 1,
        **engine_options(profile, profile.contexts[0], 16),
    }
    started = time.monotonic()
    uid = common.launch_ok(server, body)
    report.add(
        f"Launched 3 replicas of {ctx.models['small'].name} with `n_gpu=1` in {time.monotonic() - started:.1f} s."
    )
    for _ in range(3):  # least-busy routing spreads these over the replicas: each reaches its peak
        common.long_prompt_request(server, uid, profile.prompt_words)
    rows = common.replica_rows(ctx, common.describe(server, uid))
    replica_table(report, rows, ctx.memory_source)
    on_gpu0 = all(r["devices"] == [0] and r["cuda_visible_devices"] == "0" for r in rows)
    report.add(f"All three on GPU 0 with `CUDA_VISIBLE_DEVICES=0`: **{'yes' if on_gpu0 else 'NO'}**.")
    result: dict[str, Any] = {"baseline_used": baseline, "replicas": rows, "all_on_gpu0": on_gpu0}
    report.record("placement", result)

    result["refusal"] = _refusal(ctx, report, server, profile)
    report.record("placement", result)
    result["kill"] = _kill_under_load(ctx, report, server, uid, profile, baseline)
    report.record("placement", result)


def _refusal(ctx: common.Context, report: Report, server: Any, profile: Profile) -> dict[str, Any]:
    """A launch whose estimate exceeds the free memory fails before any replica starts."""
    from xinf_transformers import estimate as est

    devices = common.xinf_cli(server, "devices")["devices"]
    available = max(d["available"] for d in devices)
    config = _config(ctx.models["big"])
    per_token = est.kv_bytes_per_token(config, 2)
    tokens = int(1.5 * available / per_token)
    apps_before = set((smi.apps() or {}).keys())
    body = {
        "model_path": str(ctx.models["big"]),
        "model_uid": "too-big",
        "model_engine": "transformers",
        **engine_options(profile, profile.contexts[0], 1),
        "kv_cache_tokens": tokens,
    }
    started = time.monotonic()
    status, data = common.launch(server, body)
    seconds = time.monotonic() - started
    new_apps = set((smi.apps() or {}).keys()) - apps_before
    listed = server.http.get("/v1/models/too-big").status_code
    message = (data.get("error") or {}).get("message") if isinstance(data.get("error"), dict) else str(data)[:500]
    refused = status >= 400 and "does not fit" in (message or "") and not new_apps and listed == 404
    report.add(
        f"Refusal: a replica of {ctx.models['big'].name} with a KV cache of {tokens} tokens "
        f"({mib(tokens * per_token)}, {mib(available)} available): HTTP {status} in {seconds:.1f} s, "
        f"new GPU processes: {len(new_apps)}; refused before loading: **{'yes' if refused else 'NO'}**.\n\n"
        f"```\n{message}\n```"
    )
    if refused:
        server.http.delete("/v1/models/too-big")
    return {
        "status": status,
        "message": message,
        "seconds": seconds,
        "new_gpu_processes": len(new_apps),
        "refused": refused,
    }


def _kill_under_load(
    ctx: common.Context, report: Report, server: Any, uid: str, profile: Profile, baseline: int | None
) -> dict[str, Any]:
    described = common.describe(server, uid)
    pids = [r["pid"] for r in described["replicas"]]
    loaded = common.device_used()
    victim = pids[1]
    outcomes: list[Any] = []

    def load() -> None:
        from bench.common import OverHttp, run_batch, run_loop

        async def go() -> None:
            side = OverHttp(server.url, uid, 8 * profile.tokens)

            async def one(i: int) -> tuple[int, float]:
                try:
                    result = await side.one(i)
                    # A stream cut by the replica's death ends with an error event, not an HTTP error.
                    outcomes.append("ok" if result[0] == side.tokens else "the stream ended before its last token")
                    return result
                except Exception as exc:
                    outcomes.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    return 0, 0.0

            try:
                await run_batch(one, 12, 12)
            finally:
                await side.close()

        run_loop(go())

    thread = threading.Thread(target=load)
    thread.start()
    # Kill once the victim is serving requests (not before its first one arrives).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not common.describe(server, uid)["replicas"][1].get("inflight"):
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    gone = common.wait_gone([victim], timeout=60)
    freed_seconds = time.monotonic() - killed_at  # before the load ends: how long the dead process lingered
    thread.join(timeout=600)
    after = common.wait_ready(server, [uid], timeout=300)[uid]
    new_pids = [r["pid"] for r in after["replicas"]]
    common.long_prompt_request(server, uid, profile.prompt_words)
    restarted_used = common.device_used()
    common.terminate(server, uid)
    all_gone = common.wait_gone(set(pids) | set(new_pids), timeout=60)
    time.sleep(1)
    final = common.device_used()
    ok = outcomes.count("ok")
    result = {
        "victim": victim,
        "requests_ok": ok,
        "requests_failed": [o for o in outcomes if o != "ok"],
        "victim_gone": gone,
        "freed_seconds": round(freed_seconds, 1),
        "restarted_pid": new_pids[1] if len(new_pids) > 1 else None,
        "device_used_baseline": baseline,
        "device_used_loaded": loaded,
        "device_used_after_restart": restarted_used,
        "device_used_after_terminate": final,
        "all_processes_gone": all_gone,
    }
    returned = None if baseline is None or final is None else abs(final - baseline) <= 64 * (1 << 20)
    result["memory_returned"] = returned
    report.add(
        "Kill under load: 12 streamed requests over the 3 replicas; replica 1 "
        f"(pid {victim}) killed with SIGKILL. {ok} requests finished, {len(outcomes) - ok} ended with an error "
        f"({'; '.join(sorted(set(result['requests_failed'])))[:300] or 'none'}). The process and its GPU memory "
        f"were gone after {freed_seconds:.1f} s: **{'yes' if gone else 'NO'}**; restarted as pid "
        f"{result['restarted_pid']}."
    )
    if ctx.gpu:
        report.table(
            ["device memory used", "before launch", "3 replicas loaded", "after kill + restart", "after terminate"],
            [("GPU 0", mib(baseline), mib(loaded), mib(restarted_used), mib(final))],
        )
        report.add(f"Back to the memory before the launch (within 64 MiB): **{'yes' if returned else 'NO'}**.")
    else:
        report.add(f"no GPU: device memory not measured; every replica process gone after terminate: {all_gone}.")
    return result


# ------------------------------------------------------------------------------------------ 3. estimates


def _estimates(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    from xinf.engine import Device
    from xinf.localmodel import spec_from_path
    from xinf_transformers import estimate as est

    configs = list(itertools.product(("small", "big"), profile.contexts, profile.batches))
    devices = [Device(index=0, name="GPU 0", total_memory=1 << 50, free_memory=1 << 50)]
    estimates: dict[tuple[str, int, int], Any] = {}
    for label, context, seqs in configs:
        spec = spec_from_path(str(ctx.models[label]), None, None, None)
        estimates[label, context, seqs] = est.estimate(spec, engine_options(profile, context, seqs), devices)
    embed_spec = spec_from_path(str(ctx.models["embed"]), None, None, None)
    estimates["embed", 0, 0] = est.estimate(embed_spec, {"dtype": "bfloat16"}, devices)

    # xinf replicas, one model at a time (its four configurations side by side).
    measured: dict[tuple[str, int, int], int | None] = {}
    for label in ("small", "big"):
        uids = {}
        for _, context, seqs in [c for c in configs if c[0] == label]:
            uid = f"est-{label}-{context}-{seqs}"
            body = {"model_path": str(ctx.models[label]), "model_uid": uid, "model_engine": "transformers"}
            common.launch_ok(server, {**body, **engine_options(profile, context, seqs)}, wait=False)
            uids[label, context, seqs] = uid
        described = common.wait_ready(server, list(uids.values()))
        for uid in uids.values():
            common.long_prompt_request(server, uid, profile.prompt_words)
        pids = {key: described[uid]["replicas"][0]["pid"] for key, uid in uids.items()}
        memory = common.settled_memory(ctx, pids.values())
        for key, pid in pids.items():
            measured[key] = memory.get(pid)
        for uid in uids.values():
            common.terminate(server, uid)
        common.wait_gone(pids.values())
    uid = common.launch_ok(
        server,
        {
            "model_path": str(ctx.models["embed"]),
            "model_uid": "est-embed",
            "model_engine": "transformers",
            "dtype": "bfloat16",
        },
    )
    server.openai().embeddings.create(model=uid, input=["a sentence " * 50] * 8)
    pid = common.describe(server, uid)["replicas"][0]["pid"]
    measured["embed", 0, 0] = common.settled_memory(ctx, [pid]).get(pid)
    common.terminate(server, uid)

    # Components, in this process through the plugin's own load (torch's allocator counts them).
    components = {}
    for key in configs:
        if ctx.left() < 90:
            report.add("Components: skipped the remaining configurations (time).")
            break
        components[key] = measure_components(ctx, ctx.models[key[0]], engine_options(profile, key[1], key[2]), profile)

    rows = []
    raw = []
    for key in [*configs, ("embed", 0, 0)]:
        e = estimates[key]
        total = e.per_device[0] if e.per_device else e.host
        comp = components.get(key) or {}
        row = {
            "model": key[0],
            "context": key[1],
            "max_num_seqs": key[2],
            "estimate": {"weights": e.weights, "kv_cache": e.kv_cache, "overhead": e.overhead, "total": total},
            "measured": {**comp, "replica_total": measured.get(key)},
        }
        raw.append(row)
        rows.append(
            (
                f"{ctx.models[key[0]].name.rsplit('-', 1)[0]}"
                + ("" if key[0] == "embed" else f" ctx {key[1]} x {key[2]} seqs"),
                f"{mib(e.weights)} / {mib(comp.get('weights'))} ({fmt_ratio(ratio(e.weights, comp.get('weights')))})",
                f"{mib(e.kv_cache)} / {mib(comp.get('kv_cache'))} ({fmt_ratio(ratio(e.kv_cache, comp.get('kv_cache')))})",
                f"{mib(e.overhead)} / {mib(comp.get('overhead'))} ({fmt_ratio(ratio(e.overhead, comp.get('overhead')))})",
                f"{mib(total)} / {mib(measured.get(key))} ({fmt_ratio(ratio(total, measured.get(key)))})",
                verdict(total, measured.get(key)),
            )
        )
    report.record("estimates", raw)
    report.add(
        "Each cell: estimate / measured (ratio). Weights, KV cache and the rest (activations at one 512-token "
        "prefill step + CUDA context and allocator slack) measured in-process with torch's allocator through the "
        f"plugin's `load`; total against the xinf replica's memory ({ctx.memory_source}) after a long prompt. "
        "Target: within 10%."
    )
    report.table(["model, configuration", "weights", "KV cache", "the rest", "total (replica)", "total verdict"], rows)


def measure_components(ctx: common.Context, path: Path, options: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Weights, KV cache and the rest of one load through the plugin, in this process."""
    import torch

    from xinf.engine import Placement
    from xinf.localmodel import spec_from_path
    from xinf_transformers import plugin

    spec = spec_from_path(str(path), None, None, None)
    placement = Placement(replica=0, devices=[0] if ctx.gpu else [])
    if ctx.gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    model = plugin.load(spec, options, placement)
    try:
        weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
        weights += sum(b.numel() * b.element_size() for b in model.model.buffers())
        cache = _wait_cache(model.runner.manager)
        kv = cache.cache_tensor.numel() * cache.cache_tensor.element_size() if cache is not None else None
        out: dict[str, Any] = {"weights": weights, "kv_cache": kv}
        if not ctx.gpu:
            return out
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _generate_once(model, profile.prompt_words)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        reserved = torch.cuda.memory_reserved()
        own = (smi.apps() or {}).get(os.getpid())
        context = None if own is None else own - reserved  # CUDA context, cuBLAS workspaces (this process's)
        out.update(
            allocated=before - base,
            activations=peak,
            reserved=reserved,
            context=context,
            overhead=None if context is None else peak + context + (reserved - before - peak),
        )
        return out
    finally:
        plugin.unload(model)
        del model
        gc.collect()
        if ctx.gpu:
            torch.cuda.empty_cache()


def _wait_cache(manager: Any, timeout: float = 60) -> Any:
    """The manager's paged KV cache; its loop thread builds it after start()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processor = getattr(manager, "batch_processor", None)
        cache = getattr(processor, "cache", None)
        if cache is not None and hasattr(cache, "cache_tensor"):
            return cache
        time.sleep(0.1)
    return None


def _generate_once(model: Any, words: int) -> None:
    from xinf.engine import GenerateRequest
    from xinf_transformers import plugin

    prompt = " ".join(f"word{i % 97}" for i in range(words))
    request = GenerateRequest(messages=[{"role": "user", "content": prompt}], max_tokens=4)

    async def go() -> None:
        async for _ in plugin.generate(model, request):
            pass

    asyncio.run(go())


# ------------------------------------------------------------------------------------------ 4. serving


def _serving(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    result: dict[str, Any] = {}
    seqs = max(profile.streams)
    context = 1024 if ctx.gpu else 256
    uid = common.launch_ok(
        server,
        {
            "model_path": str(ctx.models["big"]),
            "model_uid": "chat",
            "model_engine": "transformers",
            **engine_options(profile, context, seqs),
        },
    )
    described = common.describe(server, uid)
    pid = described["replicas"][0]["pid"]
    on_gpu = ctx.gpu and pid in (smi.apps() or {})
    result["chat"] = common.chat_once(server, uid)
    report.add(
        f"Chat through the openai client ({ctx.models['big'].name}, replica pid {pid}"
        f"{', on the GPU (listed by nvidia-smi)' if on_gpu else ''}): {result['chat']}"
    )
    euid = common.launch_ok(
        server,
        {
            "model_path": str(ctx.models["embed"]),
            "model_uid": "embed",
            "model_engine": "transformers",
            "dtype": "bfloat16",
        },
    )
    texts = ["A man is eating food.", "A man is eating bread.", "The stock market fell today."]
    reply = server.openai().embeddings.create(model=euid, input=texts)
    vectors = [d.embedding for d in reply.data]
    norms = [sum(x * x for x in v) ** 0.5 for v in vectors]
    result["embeddings"] = {
        "count": len(vectors),
        "dims": [len(v) for v in vectors],
        "norms": norms,
        "prompt_tokens": reply.usage.prompt_tokens,
    }
    report.add(
        f"Embeddings through the openai client: {len(vectors)} vectors of {len(vectors[0])} dimensions, norms {[round(n, 4) for n in norms]}."
    )
    common.terminate(server, euid)
    report.record("serving", result)

    # tokens/s: xinf over HTTP against the manager in this process, taking turns, same prompts.
    direct = Direct(ctx, ctx.models["big"], engine_options(profile, context, seqs), profile.tokens)
    rows = []
    try:
        for streams in profile.streams:
            xs, ds = [], []
            for _ in range(profile.warmup):  # on an H200 both sides took 3-5x longer in their first two rounds
                common.throughput(server.url, uid, streams, profile.tokens, 1)
                direct.rate(streams)
            for r in range(profile.rounds):
                order = [("xinf", xs), ("direct", ds)] if r % 2 == 0 else [("direct", ds), ("xinf", xs)]
                for side, rates in order:
                    if side == "xinf":
                        rates += common.throughput(server.url, uid, streams, profile.tokens, 1)
                    else:
                        rates.append(direct.rate(streams))
            x, d = max(xs), max(ds)
            rows.append((streams, f"{d:.0f}", f"{x:.0f}", f"{x / d:.2f}"))
            result.setdefault("throughput", []).append({"streams": streams, "direct": ds, "xinf": xs})
            report.record("serving", result)
    finally:
        direct.close()
        common.terminate(server, uid)
    report.add(
        f"Output tokens/s, {profile.tokens} tokens per request (end-of-sequence ignored), best of {profile.rounds} rounds"
        f" after {profile.warmup} unmeasured rounds per stream count and side:"
    )
    report.table(["streams", "transformers in-process", "xinf over HTTP", "xinf / in-process"], rows)


class Direct:
    """transformers' ContinuousBatchingManager in this process, built by the plugin's own ``load``."""

    def __init__(self, ctx: common.Context, path: Path, options: dict[str, Any], tokens: int):
        from xinf.engine import Placement
        from xinf.localmodel import spec_from_path
        from xinf_transformers import plugin

        self.model = plugin.load(
            spec_from_path(str(path), None, None, None), options, Placement(replica=0, devices=[0] if ctx.gpu else [])
        )
        self.manager = self.model.runner.manager
        self.tokens = tokens
        self.ids = itertools.count()

    def rate(self, streams: int) -> float:
        from bench.common import messages, run_batch, run_loop

        tokenizer = self.model.tokenizer

        async def one(i: int) -> tuple[int, float]:
            text = tokenizer.apply_chat_template(messages(i), tokenize=False, add_generation_prompt=True)
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            rid = f"direct-{next(self.ids)}"
            outputs: asyncio.Queue[Any] = asyncio.Queue()
            self.manager.register_result_handler(rid, outputs.put_nowait)  # called on this loop
            self.manager.add_request(
                ids,
                request_id=rid,
                max_new_tokens=self.tokens,
                streaming=True,
                eos_token_id=-1,
                temperature=1.0,
                top_k=1,
                top_p=1.0,
            )
            while True:
                output = await outputs.get()
                if output.error is not None:
                    raise RuntimeError(output.error)
                if output.is_finished():
                    return len(output.generated_tokens), 0.0

        return float(run_loop(run_batch(one, streams, streams)).rate)

    def close(self) -> None:
        from xinf_transformers import plugin

        plugin.unload(self.model)
