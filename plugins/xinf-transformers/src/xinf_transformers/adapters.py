"""PEFT LoRA adapters on the transformers engine.

Every adapter of the launch is loaded into the model with ``peft`` (its LoRA
layers wrap the model's linear layers in place), and one of them, or none for
the base model, is active at a time: peft computes a batch with one adapter.
So requests take turns by adapter: ``AdapterGate`` lets the requests of the
active adapter into the batch, and once another adapter's requests are
waiting it admits no more of the active one, lets the batch drain and then
switches.  Requests of the same adapter (or of the base model) are batched
together as usual; requests of different adapters are served in turns on the
same replica, each with its own adapter.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from xinf.errors import LaunchError
from xinf.types import LoraAdapter

CONFIG = "adapter_config.json"
EXCLUSIVE = "\0exclusive"  # a waiter's key no adapter name can take


def not_peft(adapters: list[LoraAdapter]) -> str | None:
    """Why these adapters are not PEFT LoRA directories (cheap: for ``match_model``), or None."""
    for adapter in adapters:
        config = Path(adapter.path) / CONFIG
        if not config.is_file():
            return (
                f"the transformers engine loads PEFT adapter directories (with {CONFIG}); "
                f"adapter {adapter.name!r} ({adapter.path}) is not one"
            )
        try:
            kind = json.loads(config.read_text()).get("peft_type", "LORA")
        except (OSError, ValueError, AttributeError):
            return f"adapter {adapter.name!r}: {config} is not valid JSON"
        if str(kind).upper() != "LORA":
            return f"adapter {adapter.name!r} is a {kind} adapter; the transformers engine serves LoRA adapters"
    return None


def _shapes(file: Path) -> dict[str, list[int]] | None:
    """Tensor shapes from a safetensors header (8 + header bytes read), None when unreadable."""
    try:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return {k: list(v.get("shape", [])) for k, v in header.items() if k != "__metadata__"}


def parameters(adapter: LoraAdapter) -> int:
    """The adapter's parameter count, from its safetensors header (file size / 4 otherwise)."""
    shapes = _shapes(Path(adapter.path) / "adapter_model.safetensors")
    if shapes is None:
        return sum(p.stat().st_size for p in Path(adapter.path).glob("adapter_model.*")) // 4
    total = 0
    for dims in shapes.values():
        count = 1
        for dim in dims:
            count *= dim
        total += count
    return total


def check(adapters: list[LoraAdapter], model_dir: str | None) -> None:
    """Fail the launch, in the server, for an adapter whose matrices do not fit the model's.

    Compares the safetensors headers only; what they cannot tell (other file
    formats, other adapter kinds) peft checks when the replica loads.
    """
    if not model_dir:
        return
    base: dict[str, list[int]] = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        shapes = _shapes(file)
        if shapes is None:
            return
        base.update(shapes)
    if not base:
        return
    for adapter in adapters:
        shapes = _shapes(Path(adapter.path) / "adapter_model.safetensors") or {}
        for key, dims in sorted(shapes.items()):
            module, part = _lora_part(key)
            if module is None:
                continue
            weight = base.get(module + ".weight")
            if weight is None:
                raise LaunchError(
                    f"LoRA adapter {adapter.name!r} ({adapter.path}) does not fit the model: "
                    f"the model has no module {module!r}",
                    param="peft_model_config",
                )
            if len(weight) != 2 or len(dims) != 2:
                continue  # embeddings and convolutions: peft checks them
            n_out, n_in = weight
            wanted = n_in if part == "lora_A" else n_out
            have = dims[1] if part == "lora_A" else dims[0]
            if have != wanted:
                raise LaunchError(
                    f"LoRA adapter {adapter.name!r} ({adapter.path}) does not fit the model: "
                    f"{key} has shape {dims} but {module} is {n_out}x{n_in} (an adapter for another model?)",
                    param="peft_model_config",
                )


def _lora_part(key: str) -> tuple[str | None, str]:
    """``base_model.model.X.lora_A.weight`` -> (``X``, ``lora_A``)."""
    for part in ("lora_A", "lora_B"):
        suffix = f".{part}.weight"
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            return module.removeprefix("base_model.model."), part
    return None, ""


class Adapters:
    """The adapters loaded into one model; ``activate`` switches between them (None: the base model)."""

    def __init__(self, model: Any, adapters: list[LoraAdapter]):
        self.peft: Any = None
        self.model = model
        for adapter in adapters:
            self.load(adapter)
        self.active: str | None = ""  # unknown: the first activate() sets it
        self.activate(None)

    def load(self, adapter: LoraAdapter) -> None:
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, adapter.path, adapter_name=adapter.name)
            else:
                self.peft.load_adapter(adapter.path, adapter_name=adapter.name)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise LaunchError(
                f"LoRA adapter {adapter.name!r} ({adapter.path}) does not fit the model: {_first_lines(exc)}",
                param="peft_model_config",
            ) from None
        if adapter.scale != 1.0:
            self.scale(adapter.name, adapter.scale)

    def change(self, add: list[LoraAdapter], remove: list[str]) -> None:
        """Load and delete adapters; call only while no request runs (``AdapterGate.exclusive``)."""
        self.activate(None)
        for name in remove:
            self.peft.delete_adapter(name)
        for adapter in add:
            self.load(adapter)
        self.active = ""  # peft may have switched its own active adapter: set ours again
        self.activate(None)

    def scale(self, name: str, scale: float) -> None:
        from peft.tuners.lora import LoraLayer

        for module in self.peft.modules():
            if isinstance(module, LoraLayer) and name in module.scaling:
                module.set_scale(name, scale)

    def activate(self, name: str | None) -> None:
        """Make ``name`` the adapter every forward pass uses; call only while no request runs."""
        if name == self.active:
            return
        if name is None:
            self.peft.base_model.disable_adapter_layers()
        else:
            self.peft.base_model.enable_adapter_layers()
            self.peft.set_adapter(name)
        self.active = name


def _first_lines(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[:3]) if text else type(exc).__name__


class AdapterGate:
    """Admits requests into a shared batch one adapter at a time (see the module docstring)."""

    def __init__(self, adapters: Adapters):
        self.adapters = adapters
        self.running = 0
        self.waiting: dict[str | None, int] = {}
        self.locked = False  # held by exclusive(): no request enters
        self._changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:  # bound to the replica's running loop on first use
            self._changed = asyncio.Condition()
        return self._changed

    def _may_enter(self, name: str | None) -> bool:
        if self.locked:
            return False
        if self.running == 0:
            return True
        others = any(count for other, count in self.waiting.items() if other != name)
        return self.adapters.active == name and not others

    async def enter(self, name: str | None) -> None:
        async with self.changed:
            self.waiting[name] = self.waiting.get(name, 0) + 1
            try:
                await self.changed.wait_for(lambda: self._may_enter(name))
            finally:
                self.waiting[name] -= 1
                self.changed.notify_all()  # one waiter fewer: the active adapter may take more
            self.adapters.activate(name)  # a no-op unless the batch is empty
            self.running += 1

    async def exclusive(self, work: Any) -> None:
        """Run ``work()`` (in a thread) once the batch is empty, admitting no request meanwhile."""
        async with self.changed:
            self.waiting[EXCLUSIVE] = self.waiting.get(EXCLUSIVE, 0) + 1  # the active adapter takes no more
            try:
                await self.changed.wait_for(lambda: self.running == 0 and not self.locked)
            finally:
                self.waiting[EXCLUSIVE] -= 1
            self.locked = True
        try:
            await asyncio.to_thread(work)
        finally:
            async with self.changed:
                self.locked = False
                self.changed.notify_all()

    async def leave(self) -> None:
        async with self.changed:
            self.running -= 1
            self.changed.notify_all()

    async def wrap(self, name: str | None, tokens: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
        """``tokens`` run under ``name``'s turn."""
        await self.enter(name)
        try:
            async for ids in tokens:
                yield ids
        finally:
            await tokens.aclose()  # type: ignore[attr-defined]
            await self.leave()
