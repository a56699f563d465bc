"""Launch options: llama.cpp's ``common_params`` fields, by name, with our defaults.

Every field of xllamacpp's ``CommonParams`` can be given, nested ones with dots
(``sampling.top_k``, ``cpuparams.n_threads``) or as a JSON object
(``{"sampling": {"top_k": 20}}``).  Enum fields take their value or name
(``cache_type_k: q8_0``, ``flash_attn_type: enabled``).  An unknown name is a
``LaunchError`` naming the closest valid ones.

The defaults (context, slots, threads) are decided here, without importing
xllamacpp, because the memory estimate in the server needs the same numbers
as ``load`` in the replica.
"""

from __future__ import annotations

import difflib
import enum
import os
from dataclasses import dataclass
from typing import Any

from xinf.errors import LaunchError

#: Slots (requests decoded together) when ``n_parallel`` is not given: llama-server's own "auto" value.
DEFAULT_PARALLEL = 4
#: Context per slot when ``n_ctx`` is not given, capped by the model's trained context.
DEFAULT_SLOT_CONTEXT = 4096

#: llama.cpp pads the KV cache to multiples of this many cells.
KV_PAD = 256

#: Shorthands accepted besides the real field names (Xinference passes ``n_threads``).
ALIASES: dict[str, tuple[str, ...]] = {
    "n_threads": ("cpuparams.n_threads", "cpuparams_batch.n_threads"),
    "n_threads_batch": ("cpuparams_batch.n_threads",),
}
#: Fields the engine sets itself from the launch.
RESERVED = {"model": "the model file comes from the launch (model name or model_path)"}


@dataclass(frozen=True)
class Context:
    """How the KV cache is laid out: ``n_ctx`` tokens in all, shared by ``n_parallel`` slots."""

    n_ctx: int
    n_parallel: int
    n_batch: int
    n_ubatch: int
    kv_unified: bool

    @property
    def per_slot(self) -> int:
        """KV cells per slot stream, as ``llama_context`` sizes them: padded to 256."""
        n_ctx = _pad(self.n_ctx, KV_PAD)
        if self.kv_unified:
            return n_ctx
        return _pad(n_ctx // max(1, self.n_parallel), KV_PAD)


def flat(options: dict[str, Any]) -> dict[str, Any]:
    """``{"sampling": {"top_k": 2}}`` -> ``{"sampling.top_k": 2}``; dotted keys stay as they are."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and key not in ("default_template_kwargs",):
            for sub, inner in flat(value).items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
    return out


def context(options: dict[str, Any], n_ctx_train: int | None) -> Context:
    """The context layout a launch with ``options`` gets (defaults applied)."""
    opts = flat(options)
    n_parallel = _int(opts, "n_parallel", DEFAULT_PARALLEL)
    if n_parallel <= 0:  # llama.cpp's -1 means "auto", which is 4 slots
        n_parallel = DEFAULT_PARALLEL
    if "n_ctx" in opts:
        n_ctx = _int(opts, "n_ctx", 0)
        if n_ctx <= 0:  # llama.cpp's 0: the trained context, shared by the slots
            n_ctx = n_ctx_train or DEFAULT_SLOT_CONTEXT
    else:
        n_ctx = n_parallel * min(n_ctx_train or DEFAULT_SLOT_CONTEXT, DEFAULT_SLOT_CONTEXT)
    return Context(
        n_ctx=n_ctx,
        n_parallel=n_parallel,
        n_batch=_int(opts, "n_batch", 2048),
        n_ubatch=_int(opts, "n_ubatch", 512),
        kv_unified=parse_bool(opts.get("kv_unified", False), "kv_unified"),
    )


def default_threads() -> int:
    """CPU threads for a replica: the idle physical cores, less one, at least one.

    llama.cpp's threads wait for each other at every step of the graph; one
    thread more than there are idle cores makes every token wait for a thread
    the OS has put aside (on 2 busy cores, 2 threads collapse throughput).
    Hyperthreads share a core's arithmetic units and do not help, which is
    why llama.cpp itself defaults to the physical cores.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    cpus = min(cpus, physical_cores() or cpus)
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cpus - 1, int(cpus - busy)))


def placed_threads(count: int | None) -> int | None:
    """Threads for a replica placed on ``count`` cores: one per core, less one when they are the whole machine.

    llama.cpp's threads wait for each other at every step, so a thread whose
    core the server (or the request threads) borrows holds up all the others;
    a set smaller than the machine leaves cores to them.
    """
    if not count:
        return None
    machine = os.cpu_count() or count
    return max(1, count - 1) if count >= machine > 1 else count


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where it cannot tell."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    package = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                cores.add((package, core))
            package = core = None
    if core is not None:
        cores.add((package, core))
    return len(cores) or None


# ---------------------------------------------------------------- values


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off", "yes", "no"):
        return value.lower() in ("true", "1", "on", "yes")
    raise LaunchError(f"option {name} expects true or false, got {value!r}")


def ggml_type_of(value: Any, name: str) -> int:
    """A KV cache type (``f16``, ``q8_0``, ``GGML_TYPE_Q8_0`` or its number) -> the ggml type number."""
    from xinf.gguf import GGUFError, type_info, type_number

    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            type_info(value)
            return value
        except GGUFError:
            pass
    elif isinstance(value, str):
        number = type_number(value.rsplit(".", 1)[-1].upper().removeprefix("GGML_TYPE_"))
        if number is not None:
            return number
    names = ", ".join(t.lower() for t in _KV_TYPES)
    raise LaunchError(f"option {name}: unknown cache type {value!r}; use one of {names}")


_KV_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "BF16")  # in ggml's order


def flash_attention(value: Any) -> bool:
    """Whether flash attention will be on: ``auto`` (the default) turns it on where supported."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = str(value).lower()
    return not (text.endswith("disabled") or text in ("off", "false", "0", "no"))


# ---------------------------------------------------------------- CommonParams


def apply(params: Any, options: dict[str, Any]) -> None:
    """Set ``options`` on xllamacpp ``params``; ``LaunchError`` naming the bad option."""
    for key, value in flat(options).items():
        for target in ALIASES.get(key, (key,)):
            _set(params, target, value, key)


def valid_names(params: Any) -> list[str]:
    """Every settable option name, nested ones dotted."""
    names = list(ALIASES)
    for name in _fields(params):
        value = getattr(params, name)
        if _is_struct(value):
            names.extend(f"{name}.{sub}" for sub in valid_names_of(value, depth=2))
        else:
            names.append(name)
    return sorted(names)


def valid_names_of(obj: Any, depth: int) -> list[str]:
    out = []
    for name in _fields(obj):
        value = getattr(obj, name)
        if _is_struct(value) and depth > 0:
            out.extend(f"{name}.{sub}" for sub in valid_names_of(value, depth - 1))
        else:
            out.append(name)
    return out


def _set(params: Any, dotted: str, value: Any, given: str) -> None:
    parts = dotted.split(".")
    if parts[0] in RESERVED:
        raise LaunchError(f"option {given} cannot be set: {RESERVED[parts[0]]}")
    obj = params
    for i, part in enumerate(parts):
        if part not in _fields(obj):
            raise LaunchError(_unknown(params, given))
        if i < len(parts) - 1:
            obj = getattr(obj, part)
            if not _is_struct(obj):
                raise LaunchError(_unknown(params, given))
    name = parts[-1]
    current = getattr(obj, name)
    if _is_struct(current):
        raise LaunchError(f"option {given} is a group of options; set its fields, e.g. {given}.{_fields(current)[0]}")
    try:
        setattr(obj, name, _convert(current, value, given))
    except LaunchError:
        raise
    except (TypeError, ValueError, OverflowError, AssertionError) as exc:
        kind = type(current).__name__
        raise LaunchError(f"option {given}={value!r} is invalid (expects {kind}): {exc}") from None


def _convert(current: Any, value: Any, name: str) -> Any:
    if isinstance(current, enum.Enum):
        return _enum_value(type(current), value, name)
    if isinstance(current, bool):
        return parse_bool(value, name)
    if isinstance(current, int) and isinstance(value, str):
        return int(value)
    if isinstance(current, float) and isinstance(value, (str, int)):
        return float(value)
    if isinstance(current, list) and not isinstance(value, list):
        raise LaunchError(f"option {name} expects a list, got {value!r}")
    if isinstance(current, list) and len(value) < len(current) and _fixed_size(current):
        # Per-device arrays (tensor_split, fit_params_target) have a fixed length:
        # the devices not given keep their current value.
        return list(value) + current[len(value) :]
    if isinstance(current, set) and isinstance(value, list):
        return set(value)
    return value


def _enum_value(cls: type[enum.Enum], value: Any, name: str) -> Any:
    members = list(cls)
    if isinstance(value, bool):  # flash_attn_type: true / false
        wanted = "_ENABLED" if value else "_DISABLED"
        for m in members:
            if m.name.endswith(wanted):
                return m
    if isinstance(value, int) and not isinstance(value, bool):
        for m in members:
            if m.value == value:
                return m
    if isinstance(value, str):
        text = value.rsplit(".", 1)[-1].upper()
        for m in members:
            if m.name == text or m.name.endswith("_" + text):
                return m
    choices = ", ".join(_short(m.name, members) for m in members if not m.name.endswith("_COUNT"))
    raise LaunchError(f"option {name}: {value!r} is not one of {choices}")


def _short(name: str, members: list[Any]) -> str:
    """GGML_TYPE_Q8_0 -> q8_0: the name without the prefix all members share."""
    split = [m.name.split("_") for m in members]
    common = 0
    while all(len(parts) > common + 1 and parts[common] == split[0][common] for parts in split):
        common += 1
    return "_".join(name.split("_")[common:]).lower()


def _fixed_size(current: list[Any]) -> bool:
    return len(current) >= 16 and all(isinstance(v, (int, float)) for v in current)


def _unknown(params: Any, given: str) -> str:
    names = valid_names(params)
    close = difflib.get_close_matches(given, names, n=3, cutoff=0.6)
    # A field given without its group (top_k for sampling.top_k) or in the wrong one.
    last = given.rsplit(".", 1)[-1]
    by_last = {n.rsplit(".", 1)[-1]: n for n in names if "." in n}
    for match in difflib.get_close_matches(last, list(by_last), n=3, cutoff=0.75):
        if by_last[match] not in close:
            close.append(by_last[match])
    hint = f"; did you mean {', '.join(close[:4])}?" if close else "; see llama.cpp's common_params (common/common.h)"
    return f"unknown llama.cpp option {given!r}{hint}"


def _fields(obj: Any) -> list[str]:
    return [n for n in dir(obj) if not n.startswith("_") and not callable(getattr(type(obj), n, None))]


def _is_struct(value: Any) -> bool:
    return type(value).__module__.startswith("xllamacpp") and not isinstance(value, enum.Enum)


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _int(opts: dict[str, Any], key: str, default: int) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool):
        raise LaunchError(f"option {key} expects a whole number, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LaunchError(f"option {key} expects a whole number, got {value!r}") from None
