"""``xinf estimate``: a model's memory and GPU layers, without a server and without loading it.

The model is resolved as a launch resolves it (registry or file, then the best
engine), and the engine's ``estimate_vram`` hook answers for the devices given
with ``--gpu-memory`` (or this machine's devices).  Engines read only what
they need (a GGUF header), so this is quick even for large files.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec

from xinf.errors import InvalidRequest, XinfError
from xinf.types import Device, Hardware, MemoryEstimate, ModelSpec
from xinf.units import format_bytes


def run(
    *,
    model_name: str | None,
    model_path: str | None,
    model_engine: str | None,
    model_format: str | None,
    size_in_billions: str | None,
    quantization: str | None,
    gpu_memory: tuple[str, ...],
    options: dict[str, Any],
    as_json: bool,
) -> None:
    from xinf.plugins import PluginHost
    from xinf.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    hardware = _hardware(gpu_memory)
    plugins = PluginHost.discover()
    try:
        spec, engine = _resolve(
            settings,
            plugins,
            hardware,
            model_name,
            model_path,
            model_engine,
            model_format,
            size_in_billions,
            quantization,
        )
        spec = _with_local_file(spec, settings)
        if not plugins.has_hook(engine, "estimate_vram"):
            raise click.ClickException(f"engine {engine} does not estimate memory")
        estimate = plugins.hook(engine, "estimate_vram")(spec=spec, options=options, devices=hardware.devices)
    except XinfError as exc:
        raise click.ClickException(exc.message) from None
    if estimate is None:
        raise click.ClickException(f"{engine} could not estimate {spec.name} (see the log above)")
    if as_json:
        _print_json(spec, engine, hardware.devices, estimate)
    else:
        _print(spec, engine, hardware.devices, estimate)


def _hardware(gpu_memory: tuple[str, ...]) -> Hardware:
    """This machine, or with ``--gpu-memory`` given: devices of those free sizes instead of its own."""
    from xinf.devices import inventory
    from xinf.units import parse_size

    hardware = inventory()
    if gpu_memory:
        try:
            sizes = [parse_size(s) for s in gpu_memory]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--gpu-memory") from None
        hardware.devices = [
            Device(index=i, name=f"GPU {i}", total_memory=s, free_memory=s) for i, s in enumerate(sizes)
        ]
    return hardware


def _resolve(
    settings: Any,
    plugins: Any,
    hardware: Any,
    name: str | None,
    path: str | None,
    engine: str | None,
    fmt: str | None,
    size_in_billions: str | None,
    quantization: str | None,
) -> tuple[ModelSpec, str]:
    """The spec and engine a launch with these fields would get (as ``ModelManager.resolve``)."""
    from xinf.localmodel import spec_from_path
    from xinf.registry import Registry, _size

    registry = Registry(settings.home)
    if name and name.lower() in registry.families:
        candidates = registry.candidates(
            name, format=fmt, size_in_billions=_size(size_in_billions), quantization=quantization
        )
        if path:
            candidates = [
                msgspec.structs.replace(c, source=msgspec.structs.replace(c.source, path=path)) for c in candidates
            ]
    elif path:
        candidates = [spec_from_path(path, name, fmt, quantization)]
    elif name:
        raise click.ClickException(f"model {name!r} is neither built in nor registered; give --model-path")
    else:
        raise click.UsageError("give --model-name or --model-path")
    first_error: InvalidRequest | None = None
    for spec in candidates:
        try:
            return spec, plugins.choose(spec, hardware, engine).engine
        except InvalidRequest as exc:
            first_error = first_error or exc
    if first_error is None:
        raise click.ClickException(f"no spec of {name} matches the format, size and quantization given")
    raise first_error


def _with_local_file(spec: ModelSpec, settings: Any) -> ModelSpec:
    """The spec with its local path; never downloads (a hub model must be given by --model-path)."""
    from xinf import hub

    src = spec.source
    if not src.path and not src.package:
        where = src.huggingface or src.modelscope or src.csghub or "a model hub"
        raise click.ClickException(
            f"{spec.name} ({spec.format} {spec.quantization}) comes from {where} and is not on this machine; "
            "download it and give --model-path (only its header is read)"
        )
    path = hub.local_path(spec, settings)
    return msgspec.structs.replace(spec, source=msgspec.structs.replace(src, path=path))


def _print_json(spec: ModelSpec, engine: str, devices: list[Device], est: MemoryEstimate) -> None:
    data = {
        "model_name": spec.name,
        "model_format": spec.format,
        "quantization": spec.quantization,
        "model_engine": engine,
        "model_path": spec.source.path,
        "devices": [msgspec.to_builtins(d) for d in devices],
        "estimate": {**msgspec.to_builtins(est), "total": est.total},
    }
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())


def _print(spec: ModelSpec, engine: str, devices: list[Device], est: MemoryEstimate) -> None:
    click.echo(f"{spec.name} ({spec.format} {spec.quantization}) on {engine}: {spec.source.path}")
    rows = [("weights", est.weights), ("KV cache", est.kv_cache), ("overhead", est.overhead), ("total", est.total)]
    for label, value in rows:
        click.echo(f"  {label:<10} {format_bytes(value):>12}")
    if devices:
        for device, need in zip(devices, est.per_device):
            verdict = "fits" if need <= device.free_memory else "DOES NOT FIT"
            click.echo(
                f"  {device.name}: needs {format_bytes(need)} of {format_bytes(device.free_memory)} free ({verdict})"
            )
        click.echo(f"  host memory: {format_bytes(est.host)}")
        if est.gpu_layers is not None:
            click.echo(f"  GPU layers: {est.gpu_layers} of {est.total_layers}")
    else:
        click.echo(f"  no GPU: all {format_bytes(est.host)} in host memory")
    for line in est.note.splitlines():
        click.echo(f"  {line}")
