"""``POST /v1/models/{uid}/adapters`` and ``DELETE /v1/models/{uid}/adapters/{name}``: LoRA adapters of a running model."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf import adapters
from xinf.server.http import decode, json_response, read_body
from xinf.server.state import state


async def add(request: Request) -> Response:
    """Body: ``{"lora_name", "local_path"[, "scale"]}``, a ``peft_model_config.lora_list`` item."""
    st = state(request)
    uid = request.path_params["uid"]
    body = decode(await read_body(request, st.max_body), dict[str, Any])
    adapter = await adapters.add(st.manager, uid, body)
    return json_response(
        {"model_uid": uid, "lora_name": adapter.name, "local_path": adapter.path, "scale": adapter.scale}
    )


async def remove(request: Request) -> Response:
    uid, name = request.path_params["uid"], request.path_params["name"]
    await adapters.remove(state(request).manager, uid, name)
    return json_response({"model_uid": uid, "lora_name": name, "status": "removed"})
