"""Byte counts as people read them (``24.00 GiB``, ``512.00 MiB``, ``100 B``) and write them (``24GiB``)."""

from __future__ import annotations

import re

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


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``24GiB``, ``24G``, ``512MiB``, ``1.5GB`` or plain bytes -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use forms like 24GiB or 512MiB)")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * _UNITS[unit])
