"""Byte counts as people read them: ``24.00 GiB``, ``512.00 MiB``, ``100 B``."""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def format_bytes(num_bytes: int | None) -> str:
    """Binary units with two decimals (``"-"`` for None): CLI tables, placement refusals, engine estimates."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
