"""Issue 21: llama.cpp's auto-NGL plan measured against what the GPU really holds.

Steps (each reported on its own; a failed step does not stop the others):

1. Per model and two context lengths: the plan (``xinf estimate --json``: layers, bytes per
   device, host bytes) against the replica's real use (nvidia-smi by pid) and against the
   buffers llama.cpp itself reports in the replica's log (model, KV, compute, output), full offload.
2. Forced partial offload: a server whose inventory says the GPU is smaller (``XINF_SIMULATED_GPUS``
   over the real device) so that only some layers fit: the replica loads, answers, and holds no
   more than the plan said; and the estimator's layer counts for a range of GPU sizes.
3. Three replicas on the one GPU, with each replica's real memory.
4. Tokens/s through xinf against ``xllamacpp.Server`` in-process on the device, 1 and 16 streams.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from gpucheck import common
from gpucheck.report import Report, fmt_ratio, mib, ratio, verdict

MiB = 1 << 20
GiB = 1 << 30
#: xinf_llamacpp.estimate.DEVICE_RESERVE (not imported here: the tests of this module need no engine)
RESERVE = 512 * MiB


@dataclasses.dataclass(frozen=True)
class Profile:
    models: dict[str, list[str]]  # label -> tinymodels arguments
    contexts: tuple[int, int]  # n_ctx (all slots together), n_parallel 4
    partial_model: str
    replicas_model: str
    streams: tuple[int, ...]
    tokens: int
    rounds: int
    threads: int


GPU = Profile(
    models={
        "1b-f16": ["gguf-1b", "--ftype", "f16"],
        "1b-q8_0": ["gguf-1b", "--ftype", "q8_0"],
        "3b-q8_0": ["gguf-3b", "--ftype", "q8_0"],
        "3b-f16": ["gguf-3b", "--ftype", "f16"],
    },
    contexts=(4096, 32768),
    partial_model="3b-q8_0",
    replicas_model="1b-q8_0",
    streams=(1, 16),
    tokens=64,
    rounds=2,
    threads=8,
)
CPU = Profile(
    models={"tiny-f16": ["gguf-tiny", "--ftype", "f16"], "tiny-q8_0": ["gguf-tiny", "--ftype", "q8_0"]},
    contexts=(1024, 4096),
    partial_model="tiny-q8_0",
    replicas_model="tiny-q8_0",
    streams=(1, 4),
    tokens=16,
    rounds=1,
    threads=1,
)


def profile_for(ctx: common.Context) -> Profile:
    return GPU if ctx.gpu else CPU


def models(ctx: common.Context) -> dict[str, Path]:
    """Generate (or find cached) the profile's GGUF files."""
    return common.build_models(profile_for(ctx).models)


# ------------------------------------------------------------------------------------------ llama.cpp's log

_BUFFER = re.compile(
    r"(?P<where>[A-Za-z0-9_]+)\s+(?P<kind>model|KV|compute|output|RS)\s+buffer size\s*=\s*(?P<mib>[0-9.]+)\s*MiB"
)
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def is_device(where: str) -> bool:
    """``CUDA0`` is device memory; ``CUDA_Host``, ``CPU``, ``CPU_Mapped``, ``CPU_REPACK`` are host memory."""
    return re.fullmatch(r"(CUDA|ROCm|Vulkan|Metal|SYCL)\d+", where) is not None


def parse_buffers(log: str) -> dict[str, Any]:
    """The buffers llama.cpp reports at load, summed per kind and per place (device/host), bytes.

    A log holds one load per replica start; only the last load counts (the
    lines of one load come in order model, KV, output, compute).
    """
    loads: list[dict[tuple[str, str], float]] = []
    for match in _BUFFER.finditer(log):
        kind, where = match["kind"], match["where"]
        if kind == "model" and (not loads or any(k[1] != "model" for k in loads[-1])):
            loads.append({})
        if not loads:
            loads.append({})
        loads[-1][where, kind] = float(match["mib"])
    buffers = loads[-1] if loads else {}
    out: dict[str, Any] = {"device": {}, "host": {}, "raw": {f"{w} {k}": v for (w, k), v in buffers.items()}}
    for (where, kind), value in buffers.items():
        side = out["device" if is_device(where) else "host"]
        side[kind] = side.get(kind, 0) + int(value * MiB)
    offloaded = _OFFLOADED.findall(log)
    if offloaded:
        out["offloaded"] = [int(offloaded[-1][0]), int(offloaded[-1][1])]
    return out


def component_rows(
    plan: dict[str, Any], buffers: dict[str, Any], measured: int | None, reserve: int, on_gpu: bool = True
) -> list[tuple[str, Any, Any]]:
    """(component, estimated, measured) for the plan of one replica against llama.cpp's buffers and nvidia-smi.

    The plan's overhead is the per-device ``reserve`` (CUDA context, cuBLAS
    workspaces) plus the compute and output buffers; llama.cpp reports only the
    buffers, so the reserve is measured as the process's memory less them.
    """
    dev, host = buffers.get("device", {}), buffers.get("host", {})
    per_device = plan.get("per_device") or []
    reserves = reserve * len(per_device)

    def both(*kinds: str) -> int | None:
        return sum(dev.get(k, 0) + host.get(k, 0) for k in kinds) or None

    device_buffers = sum(dev.values()) or None
    overhead = plan.get("overhead")
    return [
        ("weights (all places)", plan.get("weights"), both("model")),
        ("KV cache (all places)", plan.get("kv_cache"), both("KV", "RS")),
        ("compute and output buffers", None if overhead is None else overhead - reserves, both("compute", "output")),
        (
            "device reserve (CUDA context, cuBLAS)",
            reserves or None,
            measured - device_buffers if on_gpu and measured and device_buffers else None,
        ),
        ("device: llama.cpp's buffers", per_device[0] - reserve if per_device else None, device_buffers),
        ("device: the process (nvidia-smi)", per_device[0] if per_device else None, measured),
        ("host buffers", plan.get("host"), sum(host.values()) or None),
    ]


# ------------------------------------------------------------------------------------------ the check


def run(ctx: common.Context, report: Report) -> None:
    profile = profile_for(ctx)
    report.add(
        f"Mode: **{'GPU' if ctx.gpu else 'no GPU (CPU dry run: simulated inventory; buffers are on the CPU, resident memory instead of GPU memory)'}**"
    )
    report.step("build", "Building xllamacpp from its sdist", lambda: _build(ctx, report))
    report.step("machine", "Machine and versions", lambda: _machine(ctx, report))
    if "build-failed" in ctx.only:
        return
    report.step("models", "Generated GGUF models", lambda: _models(ctx, report, profile))
    if set(profile.models) - set(ctx.models):
        return
    steps = [
        ("plan", "1. The plan against what the GPU holds, full offload", _plan_vs_real),
        ("partial", "2. Forced partial offload", _partial),
        ("replicas", "3. Three replicas on the one GPU", _replicas),
        ("throughput", "4. Tokens/s through xinf against xllamacpp in-process", _throughput),
    ]
    common.run_steps(ctx, report, "llamacpp", steps, profile)


def _build(ctx: common.Context, report: Report) -> None:
    import json

    path = ctx.outdir / "build.json"
    if not path.exists():
        report.add("No build in this run: the installed xllamacpp is measured (`XLLAMACPP_BUILD=skip`).")
        return
    build = json.loads(path.read_text())
    report.record("build", build)
    if build.get("ok"):
        report.add(
            f"Built {build.get('wheel')} ({mib(build.get('wheel_bytes'))}) for **{build.get('mode')}** "
            f"(CUDA architecture {build.get('cuda_arch')}) in **{build.get('seconds')} s** with {build.get('nproc')} jobs; "
            f"CMake arguments added: `{build.get('cmake_args')}`."
        )
    else:
        report.add(
            f"**The build did not finish**: {build.get('mode')}, stopped after {build.get('seconds')} s "
            f"(exit {build.get('exit')}) at build step {build.get('progress') or '?'}. Its log's end is in build.log."
        )
    log = ctx.outdir / "build.log"
    if log.exists():
        report.add("```\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]) + "\n```")


def _machine(ctx: common.Context, report: Report) -> None:
    info = common.machine()
    info["packages"] = common.versions(["xinf", "xinf-llamacpp", "xllamacpp", "gguf"])
    try:
        import xllamacpp

        info["xllamacpp_devices"] = xllamacpp.get_device_info()
    except Exception as exc:  # an import or device error is a finding
        info["xllamacpp_error"] = f"{type(exc).__name__}: {exc}"
    report.record("machine", info)
    report.table(["what", "value"], [(k, v) for k, v in info.items()])


def _models(ctx: common.Context, report: Report, profile: Profile) -> None:
    start = time.monotonic()
    ctx.models.update(common.build_models(profile.models))
    rows = [(label, path.name, mib(path.stat().st_size)) for label, path in ctx.models.items()]
    report.table(["model", "file", "size"], rows)
    report.add(
        f"Generated (or found cached) in {time.monotonic() - start:.0f} s: llama architecture, random weights, tools/tinymodels.py."
    )
    report.record("models", {k: str(v) for k, v in ctx.models.items()})


def body(ctx: common.Context, label: str, uid: str, n_ctx: int, profile: Profile, **extra: Any) -> dict[str, Any]:
    return {
        "model_path": str(ctx.models[label]),
        "model_uid": uid,
        "model_engine": "llama.cpp",
        "n_ctx": n_ctx,
        "n_parallel": 4,
        "n_threads": profile.threads,
        **extra,
    }


def estimate_cli(server: Any, path: Path, options: dict[str, Any], gpu_memory: str | None = None) -> dict[str, Any]:
    args = ["estimate", "--model-path", str(path), "--model-engine", "llama.cpp"]
    if gpu_memory:
        args += ["--gpu-memory", gpu_memory]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return dict(common.xinf_cli(server, *args)["estimate"])


def _measure_models(ctx: common.Context, server: Any, launches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Launch side by side, send each a request, read memory and llama.cpp's buffers; terminate."""
    for b in launches.values():
        common.launch_ok(server, b, wait=False)
    described = common.wait_ready(server, list(launches))
    out = {}
    for uid in launches:
        out[uid] = {"chat": common.chat_once(server, uid, tokens=8)}
    pids = {uid: d["replicas"][0]["pid"] for uid, d in described.items()}
    memory = common.settled_memory(ctx, pids.values())
    for uid, d in described.items():
        replica = d["replicas"][0]
        log = Path(replica["log"]).read_text(errors="replace") if replica.get("log") else ""
        out[uid].update(
            pid=pids[uid],
            gpu_layers=replica.get("gpu_layers"),
            reserved=replica.get("reserved"),
            measured=memory.get(pids[uid]),
            buffers=parse_buffers(log),
        )
    for uid in launches:
        common.terminate(server, uid)
    common.wait_gone(pids.values())
    return out


def _plan_vs_real(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    launches = {}
    plans = {}
    for label in profile.models:
        for n_ctx in profile.contexts:
            uid = f"plan-{label}-{n_ctx}".replace("_", "-")
            launches[uid] = body(ctx, label, uid, n_ctx, profile, verbosity=4)
            plans[uid] = estimate_cli(server, ctx.models[label], {"n_ctx": n_ctx, "n_parallel": 4})
    results = _measure_models(ctx, server, launches)
    raw = []
    summary = []
    for uid, result in results.items():
        plan = plans[uid]
        rows = component_rows(plan, result["buffers"], result["measured"], RESERVE, ctx.gpu)
        raw.append({"uid": uid, "plan": plan, **result})
        total_est, total_meas = (plan.get("per_device") or [None])[0], result["measured"]
        offloaded = result["buffers"].get("offloaded")
        summary.append(
            (
                uid.removeprefix("plan-"),
                f"{plan.get('gpu_layers')}/{plan.get('total_layers')}",
                f"{offloaded[0]}/{offloaded[1]}" if offloaded else "-",
                mib(total_est),
                mib(total_meas),
                fmt_ratio(ratio(total_est, total_meas)),
                verdict(total_est, total_meas),
            )
        )
        report.add(
            f"**{uid.removeprefix('plan-')}** (replica pid {result['pid']}, reserved {mib(sum(result['reserved'] or []))}):"
        )
        report.table(
            ["component", "estimate", "measured", "estimate / measured", "verdict"],
            [(name, mib(e), mib(m), fmt_ratio(ratio(e, m)), verdict(e, m)) for name, e, m in rows],
        )
        report.record("plan", raw)
    report.add(f"Summary (device total: the plan's bytes for GPU 0 against the replica's memory, {ctx.memory_source}):")
    report.table(
        ["model, n_ctx", "layers planned", "layers llama.cpp offloaded", "plan", "measured", "ratio", "verdict"],
        summary,
    )
    if not ctx.gpu:
        report.add("no GPU: llama.cpp runs every layer on the CPU, so its buffers are all host buffers here.")


def _partial(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    from xinf.engine import Device
    from xinf.localmodel import spec_from_path
    from xinf_llamacpp.plugin import estimate_vram

    label = profile.partial_model
    n_ctx = profile.contexts[0]
    options = {"n_ctx": n_ctx, "n_parallel": 4}
    spec = spec_from_path(str(ctx.models[label]), None, None, None)

    def plan_for(size: int) -> Any:
        return estimate_vram(
            spec=spec, options=options, devices=[Device(index=0, name="GPU 0", total_memory=size, free_memory=size)]
        )

    full = plan_for(1 << 50)
    total_layers = full.total_layers
    # The estimator's layer counts from "nothing fits" to "everything fits", in 12 steps.
    top = full.per_device[0]
    ladder = []
    for i in range(13):
        size = int(top * i / 12)
        p = plan_for(size)
        ladder.append(
            (mib(size), f"{p.gpu_layers}/{p.total_layers}", mib(p.per_device[0] if p.per_device else 0), mib(p.host))
        )
    report.add(f"The plan for {ctx.models[label].name} at n_ctx {n_ctx} as the GPU shrinks (estimator only):")
    report.table(["GPU free", "layers on GPU", "GPU bytes", "host bytes"], ladder)

    # The smallest device on which half the layers fit (bisection: the count only grows with the size).
    low, high = 0, top
    while high - low > MiB:
        middle = (low + high) // 2
        if (plan_for(middle).gpu_layers or 0) >= total_layers // 2:
            high = middle
        else:
            low = middle
    size = high
    plan = plan_for(size)
    limited = common.start_server(ctx, "llamacpp-limited", {"XINF_SIMULATED_GPUS": f"{size}"})
    try:
        uid = "partial"
        common.launch_ok(limited, body(ctx, label, uid, n_ctx, profile, verbosity=4))
        chat = common.chat_once(limited, uid, tokens=8)
        d = common.describe(limited, uid)
        replica = d["replicas"][0]
        measured = common.settled_memory(ctx, [replica["pid"]]).get(replica["pid"])
        buffers = parse_buffers(Path(replica["log"]).read_text(errors="replace"))
        common.terminate(limited, uid)
    finally:
        limited.stop()
    planned = plan.per_device[0]
    within = measured is not None and measured <= planned
    offloaded = buffers.get("offloaded")
    result = {
        "simulated_gpu": size,
        "plan": {
            "gpu_layers": plan.gpu_layers,
            "total_layers": plan.total_layers,
            "per_device": plan.per_device,
            "host": plan.host,
        },
        "replica_gpu_layers": replica.get("gpu_layers"),
        "offloaded": offloaded,
        "measured": measured,
        "buffers": buffers,
        "chat": chat,
        "within_plan": within,
    }
    report.record("partial", result)
    report.add(
        f"A server told the GPU has {mib(size)} (`XINF_SIMULATED_GPUS`, over the real device): the plan puts "
        f"{plan.gpu_layers} of {plan.total_layers} layers on it ({mib(planned)} on the GPU, {mib(plan.host)} on the host); "
        f"the replica got gpu_layers={replica.get('gpu_layers')}, llama.cpp offloaded "
        f"{'/'.join(map(str, offloaded)) if offloaded else '-'}; it answered ({chat['completion_tokens']} tokens) and holds "
        f"{mib(measured)} ({ctx.memory_source}): no more than the plan said: **{'yes' if within else 'NO'}** "
        f"(ratio {fmt_ratio(ratio(planned, measured))})."
    )
    report.table(
        ["component", "estimate", "measured", "estimate / measured", "verdict"],
        [
            (name, mib(e), mib(m), fmt_ratio(ratio(e, m)), verdict(e, m))
            for name, e, m in component_rows(
                {
                    "weights": plan.weights,
                    "kv_cache": plan.kv_cache,
                    "overhead": plan.overhead,
                    "per_device": plan.per_device,
                    "host": plan.host,
                },
                buffers,
                measured,
                RESERVE,
                ctx.gpu,
            )
        ],
    )


def _replicas(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    from gpucheck.transformers_check import replica_table

    label = profile.replicas_model
    uid = common.launch_ok(server, body(ctx, label, "three", profile.contexts[0], profile, replica=3, n_gpu=1))
    for _ in range(3):
        common.chat_once(server, uid, tokens=8)
    rows = common.replica_rows(ctx, common.describe(server, uid))
    replica_table(report, rows, ctx.memory_source)
    on_gpu0 = all(r["devices"] == [0] and r["cuda_visible_devices"] == "0" for r in rows)
    report.add(
        f"All three on GPU 0 with `CUDA_VISIBLE_DEVICES=0` and {rows[0]['gpu_layers']} layers each: **{'yes' if on_gpu0 else 'NO'}**."
    )
    report.record("replicas", {"rows": rows, "all_on_gpu0": on_gpu0})
    common.terminate(server, uid)
    common.wait_gone([r["pid"] for r in rows if r["pid"]])


def _throughput(ctx: common.Context, report: Report, server: Any, profile: Profile) -> None:
    from bench.common import Settings, run_batch, run_loop
    from bench.llamacpp import Direct

    label = profile.replicas_model
    seqs = max(profile.streams)
    context = 1024
    settings = Settings(tokens=profile.tokens, threads=profile.threads, max_seqs=seqs, context=context)
    b = body(ctx, label, "tps", seqs * context, profile)
    b["n_parallel"] = seqs
    uid = common.launch_ok(server, b)
    layers = common.describe(server, uid)["replicas"][0].get("gpu_layers")

    direct = (
        Direct(ctx.models[label], settings)
        if layers is None
        else _direct_with_layers(ctx.models[label], settings, layers)
    )
    rows, raw = [], []
    try:
        for streams in profile.streams:
            xs: list[float] = []
            ds: list[float] = []
            for r in range(profile.rounds):
                order = ["xinf", "direct"] if r % 2 == 0 else ["direct", "xinf"]
                for side in order:
                    if side == "xinf":
                        xs += common.throughput(server.url, uid, streams, profile.tokens, 1)
                    else:
                        ds.append(run_loop(run_batch(direct.one, streams, streams, first=1000 * r)).rate)
            rows.append((streams, f"{max(ds):.0f}", f"{max(xs):.0f}", f"{max(xs) / max(ds):.2f}"))
            raw.append({"streams": streams, "direct": ds, "xinf": xs})
            report.record("throughput", {"gpu_layers": layers, "rows": raw})
    finally:
        run_loop(direct.close())
        common.terminate(server, uid)
    report.add(
        f"{ctx.models[label].name}, {layers} layers on the GPU on both sides, {profile.tokens} tokens per request, n_parallel {seqs}, best of {profile.rounds}:"
    )
    report.table(["streams", "xllamacpp in-process", "xinf over HTTP", "xinf / in-process"], rows)


def _direct_with_layers(path: Path, settings: Any, layers: int) -> Any:
    """bench's in-process xllamacpp server with the same layer count as the xinf replica."""
    from bench import llamacpp

    class Direct(llamacpp.Direct):
        def __init__(self, path: Path, settings: Any):
            from concurrent.futures import ThreadPoolExecutor

            import xllamacpp as xlc

            p = llamacpp.params(path, settings)
            p.n_gpu_layers = layers
            self.server = xlc.Server(p)
            self.settings = settings
            self.pool = ThreadPoolExecutor(max_workers=4 * settings.max_seqs, thread_name_prefix="direct")

    return Direct(path, settings)
