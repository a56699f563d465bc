"""LoRA adapters: what a launch asks for and which adapter a request picks.

A launch names its adapters in Xinference's ``peft_model_config``
(``{"lora_list": [{"lora_name": ..., "local_path": ...}]}``, plus an optional
``scale`` per adapter, an xinf addition) or with ``xinf launch --lora
NAME=PATH[:SCALE]``.  The adapters travel in ``ModelSpec.adapters`` so that
every engine sees them: ``match_model`` declines what it cannot serve,
``estimate_vram`` counts their memory, ``load`` loads them in each replica.

A request picks an adapter by its ``model``: ``"<uid>:<adapter>"`` or the
adapter's own name (listed by ``GET /v1/models`` as an entry of its own with
``parent`` set to the base model, as vLLM lists its LoRA modules), or with the
``lora_name`` field (Xinference's ``generate_config``).  No adapter means the
base model.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from xinf.errors import Conflict, InvalidRequest, LaunchError, NotFound
from xinf.types import LoraAdapter, ModelSpec

if TYPE_CHECKING:
    from xinf.model import RunningModel
    from xinf.plugins import PluginHost
    from xinf.types import Hardware


class ModelManager(Protocol):
    """What adapter changes need of the manager (a protocol, so this module does not import it)."""

    models: dict[str, RunningModel]
    plugins: PluginHost

    def get(self, uid: str) -> RunningModel: ...

    def hardware(self) -> Hardware: ...


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PEFT_KEYS = ("lora_list", "image_lora_load_kwargs", "image_lora_fuse_kwargs")
_ITEM_KEYS = ("lora_name", "local_path", "scale")


# ---------------------------------------------------------------- launch


def from_config(config: Any) -> list[LoraAdapter]:
    """The adapters of a ``peft_model_config``; a 400 naming the field for anything wrong in it."""
    if not config:
        return []
    param = "peft_model_config"
    if not isinstance(config, dict):
        raise InvalidRequest('peft_model_config must be an object like {"lora_list": [...]}', param=param)
    unknown = sorted(set(config) - set(_PEFT_KEYS))
    if unknown:
        raise InvalidRequest(
            f"unknown peft_model_config field(s) {', '.join(unknown)} (known: {', '.join(_PEFT_KEYS)})", param=param
        )
    for key in ("image_lora_load_kwargs", "image_lora_fuse_kwargs"):
        if config.get(key):
            raise InvalidRequest(
                f"peft_model_config.{key} applies to image models, which xinf does not serve", param=param
            )
    items = config.get("lora_list") or []
    if not isinstance(items, list):
        raise InvalidRequest("peft_model_config.lora_list must be a list of {lora_name, local_path}", param=param)
    adapters: list[LoraAdapter] = []
    for i, item in enumerate(items):
        adapters.append(_item(item, f"peft_model_config.lora_list[{i}]"))
    names = [a.name for a in adapters]
    for name in names:
        if names.count(name) > 1:
            raise InvalidRequest(f"adapter name {name!r} is given twice in peft_model_config.lora_list", param=param)
    return adapters


def _item(item: Any, where: str) -> LoraAdapter:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object with lora_name and local_path", param="peft_model_config")
    unknown = sorted(set(item) - set(_ITEM_KEYS))
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(_ITEM_KEYS)})",
            param="peft_model_config",
        )
    name, path, scale = item.get("lora_name"), item.get("local_path"), item.get("scale", 1.0)
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(
            f"{where}.lora_name must be a name of letters, digits, '.', '_' and '-', not {name!r}",
            param="peft_model_config",
        )
    if not isinstance(path, str) or not path:
        raise InvalidRequest(
            f"{where}.local_path: adapter {name!r} needs the path of its files", param="peft_model_config"
        )
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise InvalidRequest(
            f"{where}.scale: adapter {name!r} needs a number, not {scale!r}", param="peft_model_config"
        )
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise InvalidRequest(f"adapter {name!r}: {full} does not exist", param="peft_model_config")
    return LoraAdapter(name=name, path=full, scale=float(scale))


def with_adapters(spec: ModelSpec, adapters: list[LoraAdapter]) -> ModelSpec:
    """``spec`` carrying ``adapters`` (a copy: registry specs are shared)."""
    return msgspec.structs.replace(spec, adapters=list(adapters)) if adapters else spec


def check_uid(uid: str, adapters: list[LoraAdapter]) -> None:
    """An adapter named like its own model would make the bare name ambiguous."""
    for adapter in adapters:
        if adapter.name == uid:
            raise InvalidRequest(
                f"adapter {adapter.name!r} has the name of its model's uid; rename the adapter or set model_uid",
                param="peft_model_config",
            )


def parse_cli(value: str) -> dict[str, Any]:
    """``NAME=PATH[:SCALE]`` (``xinf launch --lora``) as a ``lora_list`` item."""
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--lora {value!r}: use NAME=PATH or NAME=PATH:SCALE")
    path, colon, tail = rest.rpartition(":")
    if colon:
        try:
            return {"lora_name": name, "local_path": path, "scale": float(tail)}
        except ValueError:
            pass  # a colon inside the path
    return {"lora_name": name, "local_path": rest}


# ---------------------------------------------------------------- requests


def lookup(manager: ModelManager, name: str, lora_name: str | None = None) -> tuple[RunningModel, str | None]:
    """The running model a request's ``model`` names, and the adapter it asks for (None: the base model)."""
    adapter: str | None = None
    if name in manager.models:
        model = manager.models[name]
    elif ":" in name:
        uid, _, adapter = name.partition(":")
        model = manager.get(uid)
    else:
        owners = [m for m in manager.models.values() if any(a.name == name for a in m.spec.adapters)]
        if len(owners) > 1:
            uids = ", ".join(sorted(m.uid for m in owners))
            raise InvalidRequest(
                f"adapter {name!r} is served by several models ({uids}); name it as '<uid>:{name}'", param="model"
            )
        if not owners:
            manager.get(name)  # the usual 404, listing the running models
        model, adapter = owners[0], name
    if lora_name:
        if adapter is not None and adapter != lora_name:
            raise InvalidRequest(
                f"model {name!r} names adapter {adapter!r} but lora_name is {lora_name!r}", param="lora_name"
            )
        adapter = lora_name
    if adapter is not None and not any(a.name == adapter for a in model.spec.adapters):
        have = ", ".join(a.name for a in model.spec.adapters) or "none"
        raise NotFound(
            f"model {model.uid!r} has no adapter {adapter!r} (its adapters: {have})",
            param="lora_name" if lora_name else "model",
            code="adapter_not_found",
        )
    return model, adapter


def listed(manager: ModelManager) -> list[dict[str, Any]]:
    """``GET /v1/models`` entries for the adapters: like vLLM's, with ``parent`` and ``root``.

    The id is the adapter's own name, or ``<uid>:<name>`` where two models
    have adapters of that name or a model has that uid.
    """
    counts: dict[str, int] = {}
    for model in manager.models.values():
        for adapter in model.spec.adapters:
            counts[adapter.name] = counts.get(adapter.name, 0) + 1
    out = []
    for model in manager.models.values():
        if not model.spec.adapters:
            continue
        base = model.describe()
        for adapter in model.spec.adapters:
            unique = counts[adapter.name] == 1 and adapter.name not in manager.models
            out.append(
                {
                    **base,
                    "id": adapter.name if unique else f"{model.uid}:{adapter.name}",
                    "root": adapter.path,
                    "parent": model.uid,
                    "lora_name": adapter.name,
                    "lora_scale": adapter.scale,
                }
            )
    return out


# ---------------------------------------------------------------- on a running model


async def add(manager: ModelManager, uid: str, item: Any) -> LoraAdapter:
    """Load one more adapter (a ``lora_list`` item) into every replica of a ready model."""
    model = _ready(manager, uid)
    _can_change(manager, model)
    adapter = _item(item, "adapter")
    if any(a.name == adapter.name for a in model.spec.adapters):
        raise Conflict(f"model {uid!r} already has an adapter {adapter.name!r}", param="lora_name")
    check_uid(uid, [adapter])
    # The engine's own checks, as at launch: can it take this adapter, and does it fit the model?
    trial = msgspec.structs.replace(model.spec, adapters=[*model.spec.adapters, adapter])
    hardware = await asyncio.to_thread(manager.hardware)
    match = manager.plugins.hook(model.engine, "match_model")(spec=trial, hardware=hardware)
    if match is not None and match.score <= 0 and not match.explicit_only:
        raise InvalidRequest(f"{model.engine}: {match.reason}", param="local_path")
    if manager.plugins.has_hook(model.engine, "estimate_vram"):
        try:
            manager.plugins.hook(model.engine, "estimate_vram")(spec=trial, options=model.options, devices=[])
        except LaunchError as exc:
            raise InvalidRequest(exc.message, param="local_path") from None
    await _each_replica(model, [adapter], [])
    model.spec.adapters.append(adapter)  # replicas started from now on load it too
    return adapter


async def remove(manager: ModelManager, uid: str, name: str) -> None:
    """Drop an adapter from every replica of a ready model."""
    model = _ready(manager, uid)
    _can_change(manager, model)
    if not any(a.name == name for a in model.spec.adapters):
        have = ", ".join(a.name for a in model.spec.adapters) or "none"
        raise NotFound(f"model {uid!r} has no adapter {name!r} (its adapters: {have})", code="adapter_not_found")
    await _each_replica(model, [], [name])
    model.spec.adapters[:] = [a for a in model.spec.adapters if a.name != name]


def _can_change(manager: ModelManager, model: RunningModel) -> None:
    if not manager.plugins.has_hook(model.engine, "update_adapters"):
        raise InvalidRequest(
            f"the {model.engine} engine cannot add or remove LoRA adapters on a running model; "
            "launch it again with the adapters wanted",
            param="model",
        )


def _ready(manager: ModelManager, uid: str) -> RunningModel:
    model = manager.get(uid)
    if model.status != "ready":
        raise Conflict(f"model {uid!r} is {model.status}; adapters change once it is ready")
    return model


async def _each_replica(model: RunningModel, add: list[LoraAdapter], remove: list[str]) -> None:
    """The change on every running replica, or on none: those that made it are undone when one fails."""
    replicas = [r for r in model.replicas if r.ready]
    wire = [msgspec.to_builtins(a) for a in add]  # the Call frame carries plain values; see as_adapters
    results = await asyncio.gather(
        *(r.call("update_adapters", add=wire, remove=remove) for r in replicas), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if not failures:
        return
    done = [r for r, result in zip(replicas, results) if not isinstance(result, BaseException)]
    if add:
        undo = [a.name for a in add]
        await asyncio.gather(*(r.call("update_adapters", add=[], remove=undo) for r in done), return_exceptions=True)
    raise failures[0]


def as_adapters(items: list[Any]) -> list[LoraAdapter]:
    """``update_adapters``' ``add`` as ``LoraAdapter`` s (a replica receives them as plain maps)."""
    return [a if isinstance(a, LoraAdapter) else msgspec.convert(a, LoraAdapter) for a in items]
