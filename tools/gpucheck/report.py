"""The check's Markdown report and raw numbers, written after every step.

A step that fails is recorded with its error and the check goes on, so one
run on a GPU machine (minutes that are hard to get) always brings back
everything that worked.  The files are rewritten after each step: a run cut
off by its time limit still leaves a report.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

MiB = 1 << 20
#: the issues' target: estimates within 10% of what was measured
TOLERANCE = 0.10


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / MiB:,.0f} MiB"


def ratio(estimated: int | float | None, measured: int | float | None) -> float | None:
    """estimate / measured; None when either is unknown or nothing was measured."""
    if estimated is None or measured is None or measured <= 0:
        return None
    return estimated / measured


def verdict(estimated: int | float | None, measured: int | float | None, tolerance: float = TOLERANCE) -> str:
    """``ok`` within the tolerance, else how far and which way the estimate is off."""
    r = ratio(estimated, measured)
    if r is None:
        return "not measured"
    off = r - 1
    if abs(off) <= tolerance:
        return "ok"
    return f"{'over' if off > 0 else 'under'} by {abs(off):.0%}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; cells are str()-ed, pipes escaped."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """``report.md`` and ``results.json`` in ``outdir``."""

    def __init__(self, outdir: Path, title: str):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.parts: list[str] = []
        self.data: dict[str, Any] = {"title": title, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": {}}
        self.failures: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")
        self.save()

    def heading(self, text: str) -> None:
        self.add(f"## {text}")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.add(table(headers, rows))

    def record(self, key: str, value: Any) -> None:
        self.data["steps"][key] = value
        self.save()

    def step(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        """Run one step under its heading; a failure is reported, not raised."""
        self.heading(title)
        start = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # the report must survive any step
            tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:]
            self.failures.append(f"{title}: {type(exc).__name__}: {exc}")
            self.add(f"**FAILED**: `{type(exc).__name__}: {str(exc)[:500]}`\n\n```\n{tail}\n```")
            self.data["steps"].setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
            result = None
        seconds = time.monotonic() - start
        self.data.setdefault("seconds", {})[name] = round(seconds, 1)
        self.add(f"_({seconds:.0f} s)_")
        return result

    def markdown(self) -> str:
        head = [f"# {self.title}\n"]
        if self.failures:
            head.append("Failed steps: " + "; ".join(self.failures) + "\n")
        return "\n".join(head + self.parts)

    def save(self) -> None:
        (self.outdir / "report.md").write_text(self.markdown(), encoding="utf-8")
        self.data["failures"] = self.failures
        (self.outdir / "results.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n", encoding="utf-8")
