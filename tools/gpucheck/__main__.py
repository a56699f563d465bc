"""``python -m gpucheck transformers|llamacpp OUTDIR [--minutes N] [--dry-run]`` (tools/ and the repo on sys.path)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gpucheck import common
from gpucheck.report import Report

TITLES = {
    "transformers": "xinf on a GPU: inventory, placement, memory estimates, transformers on CUDA",
    "llamacpp": "xinf on a GPU: llama.cpp's auto-NGL plan against what the GPU holds",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpucheck", description=__doc__)
    parser.add_argument("check", choices=sorted(TITLES))
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--minutes", type=float, default=6.0, help="time the measuring may take (steps are cut short after)"
    )
    parser.add_argument("--dry-run", action="store_true", help="behave as if there were no GPU")
    parser.add_argument("--home", type=Path, default=Path("/tmp/xinf-gpucheck"), help="XINFERENCE_HOME of the servers")
    parser.add_argument(
        "--models-only", action="store_true", help="only generate the check's models (cached), then exit"
    )
    parser.add_argument("--only", default="", help="comma-separated steps to run (a rerun of what failed)")
    args = parser.parse_args(argv)
    gpu = common.detect_gpu() and not args.dry_run
    ctx = common.Context(outdir=args.outdir, gpu=gpu, deadline=time.monotonic() + 60 * args.minutes, home=args.home)
    ctx.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.models_only:
        from gpucheck import llamacpp_check, transformers_check

        module = transformers_check if args.check == "transformers" else llamacpp_check
        for label, path in module.models(ctx).items():
            print(f"{label}: {path}")
        return 0
    report = Report(args.outdir, TITLES[args.check] + ("" if gpu else " (no GPU: CPU dry run)"))
    if args.check == "transformers":
        from gpucheck import transformers_check as check
    else:
        from gpucheck import llamacpp_check as check  # type: ignore[no-redef]
    try:
        check.run(ctx, report)
    finally:
        report.add(f"Report written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.")
        print(f"gpucheck: {args.outdir / 'report.md'} ({len(report.failures)} failed steps)", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
