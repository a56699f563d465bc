"""Launch options of the mlx engine (the plugin module's docstring says what each does)."""

from __future__ import annotations

import difflib
from typing import Any

import msgspec

from xinf.errors import LaunchError


class MLXOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Launch options of the mlx engine (see the module docstring)."""

    context_length: int | None = None
    max_num_seqs: int = 8
    prefill_step_size: int = 2048
    max_kv_size: int | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "prefill_step_size", "context_length", "max_kv_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


def parse_options(options: dict[str, Any]) -> MLXOptions:
    valid = list(MLXOptions.__struct_fields__)
    unknown = [k for k in options if k not in valid]
    if unknown:
        hints = [
            f"{k!r} (did you mean {', '.join(difflib.get_close_matches(k, valid)) or 'nothing'}?)" for k in unknown
        ]
        raise LaunchError(f"unknown mlx option {', '.join(hints)}; valid options: {', '.join(valid)}")
    try:
        return msgspec.convert(options, MLXOptions, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise LaunchError(f"invalid mlx option: {exc}") from None
