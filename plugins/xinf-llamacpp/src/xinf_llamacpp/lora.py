"""GGUF LoRA adapters for llama.cpp: checked against the base model from their headers.

llama.cpp's adapter files (``convert_lora_to_gguf.py`` writes them) say
``general.type = adapter``, ``adapter.type = lora``, the base's
``general.architecture`` and ``adapter.lora.alpha``; each adapted matrix
``W`` (ggml dims ``[n_in, n_out]``) has ``<W>.lora_a`` with dims ``[n_in, r]``
and ``<W>.lora_b`` with dims ``[r, n_out]``.  llama.cpp applies
``scale * alpha / r * B @ A`` (``scale`` alone when alpha is 0).

llama.cpp fails to load an adapter that does not fit with only a generic
"failed to init server" for the caller (its reason goes to the log), so the
same checks run here first and fail the launch with the adapter's name and
the reason.
"""

from __future__ import annotations

import os

from xinf.errors import LaunchError
from xinf.gguf import GGUFError, GGUFHeader, read_header
from xinf.types import LoraAdapter


def not_gguf(adapters: list[LoraAdapter]) -> str | None:
    """Why llama.cpp cannot take these adapters at all (cheap: for ``match_model``), or None."""
    for adapter in adapters:
        if not os.path.isfile(adapter.path) or not adapter.path.lower().endswith(".gguf"):
            return (
                f"llama.cpp loads LoRA adapters as GGUF files; adapter {adapter.name!r} ({adapter.path}) is not one "
                "(convert a PEFT adapter with llama.cpp's convert_lora_to_gguf.py)"
            )
    return None


def check(adapter: LoraAdapter, base: GGUFHeader) -> dict[str, int]:
    """Raise ``LaunchError`` unless ``adapter`` fits ``base``; return its bytes by base tensor name."""

    def fail(reason: str) -> LaunchError:
        return LaunchError(f"LoRA adapter {adapter.name!r} ({adapter.path}) does not fit the model: {reason}")

    try:
        header = read_header(adapter.path)
    except (OSError, GGUFError) as exc:
        raise fail(f"cannot read it as GGUF: {exc}") from None
    if header.get("general.type") != "adapter" or header.get("adapter.type") != "lora":
        raise fail(
            f"it is not a LoRA adapter (general.type {header.get('general.type')!r}, "
            f"adapter.type {header.get('adapter.type')!r})"
        )
    arch, base_arch = header.get("general.architecture"), base.get("general.architecture")
    if arch != base_arch:
        raise fail(f"it was made for architecture {arch!r}, the model is {base_arch!r}")
    base_dims = {t.name: t.dims for t in base.tensors}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    sizes: dict[str, int] = {}
    for t in header.tensors:
        target, _, part = t.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            if t.name.endswith("_norm.weight"):
                continue  # llama.cpp skips these too
            raise fail(f"tensor {t.name!r} is neither a lora_a nor a lora_b")
        pairs.setdefault(target, {})[part] = t.dims
        sizes[target] = sizes.get(target, 0) + t.nbytes
    for target, pair in sorted(pairs.items()):
        if len(pair) != 2:
            raise fail(f"{target} has only {next(iter(pair))}")
        dims = base_dims.get(target)
        if dims is None:
            raise fail(f"the model has no tensor {target!r}")
        a, b = pair["lora_a"], pair["lora_b"]
        if len(dims) != 2 or len(a) != 2 or len(b) != 2:
            raise fail(f"{target} is not a matrix in both files")
        if target.endswith("token_embd.weight"):
            ok = dims[0] == b[1] and dims[1] == a[1]
        else:
            ok = dims[0] == a[0] and dims[1] == b[1] and a[1] == b[0]
        if not ok:
            raise fail(
                f"{target}: lora_a {list(a)} and lora_b {list(b)} do not match the model's {list(dims)} "
                "(an adapter for another model size, or a wrong rank)"
            )
    if not pairs:
        raise fail("it holds no lora_a/lora_b tensors")
    return sizes


def check_all(adapters: list[LoraAdapter], base_path: str) -> dict[str, int]:
    """Check every adapter against the model at ``base_path``; their bytes by base tensor name, summed."""
    if not adapters:
        return {}
    reason = not_gguf(adapters)
    if reason:
        raise LaunchError(reason)
    base = read_header(base_path)
    total: dict[str, int] = {}
    for adapter in adapters:
        for name, size in check(adapter, base).items():
            total[name] = total.get(name, 0) + size
    return total


def request_scales(adapters: list[LoraAdapter], chosen: str | None) -> list[dict[str, float]]:
    """llama.cpp's per-request ``lora`` list: the chosen adapter at its scale, every other one off.

    Every adapter is listed: llama.cpp keeps its launch-time scale for any
    adapter a request leaves out.
    """
    return [{"id": i, "scale": a.scale if a.name == chosen else 0.0} for i, a in enumerate(adapters)]
