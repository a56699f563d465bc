"""The rest of Xinference's REST routes, in its shapes, for xinference-client 4.x.

Routes that have a meaning here do the real thing (engine parameters, request
abort and progress, token ids to tokens, instances).  Routes about Xinference's
separate supervisor, worker and API processes answer as Xinference does for a
cluster of one machine: xinf is its own supervisor and its only worker.
Model-type routes xinf has no engine for answer 400 naming the model, never 404.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from xinf.errors import AuthenticationError, InvalidRequest
from xinf.registry import MODEL_TYPES
from xinf.server.admin import engine_matches, registrations
from xinf.server.http import decode, json_response, read_body
from xinf.server.state import state

# Every model type xinference-client knows; those outside MODEL_TYPES have no registrations here.
XINFERENCE_TYPES = ("LLM", "embedding", "rerank", "image", "audio", "video", "flexible", "world")


def _served_type(name: str) -> str | None:
    """The model type as this server spells it, or None for a type xinf does not serve."""
    return next((t for t in MODEL_TYPES if t.lower() == name.lower()), None)


def _known_type(name: str) -> str:
    known = _served_type(name) or next((t for t in XINFERENCE_TYPES if t.lower() == name.lower()), None)
    if known is None:
        raise InvalidRequest(f"unknown model type {name!r}; known: {', '.join(XINFERENCE_TYPES)}", param="model_type")
    return known


# ---------------------------------------------------------------- tokens


class ConvertIds(msgspec.Struct, kw_only=True):
    model: str
    input: list[int | list[int]]
    user: str | None = None


async def convert_ids_to_tokens(request: Request) -> Response:
    """``POST /v1/convert_ids_to_tokens``: token ids -> the tokenizer's tokens, as Xinference answers."""
    st = state(request)
    req = decode(await read_body(request, st.max_body), ConvertIds)
    model = st.manager.get(req.model)
    flat = all(isinstance(i, int) for i in req.input)
    if not flat and not all(isinstance(i, list) for i in req.input):
        raise InvalidRequest("input is a list of token ids or a list of such lists, not a mix", param="input")
    rows = [[i for i in req.input if isinstance(i, int)]] if flat else [r for r in req.input if isinstance(r, list)]
    with model.admitted():
        replica = model.pick()
        tokens = await replica.call("convert_ids_to_tokens", ids=rows)
    return json_response(tokens[0] if flat else tokens)


# ---------------------------------------------------------------- login


class Login(msgspec.Struct, kw_only=True):
    username: str = ""
    password: str


async def token(request: Request) -> Response:
    """``POST /token`` (xinference-client's ``login``): xinf has API keys, not users; the password is a key."""
    from xinf.server.auth import KeyRing

    st = state(request)
    req = decode(await read_body(request, st.max_body), Login)
    keys = KeyRing.from_settings(st.settings)
    if keys.empty:
        raise InvalidRequest("this server needs no login: it has no API keys")
    if keys.role_of(req.password.encode()) is None:
        raise AuthenticationError("wrong API key (give one of the server's API keys as the password)")
    return json_response({"access_token": req.password, "token_type": "bearer"})


# ---------------------------------------------------------------- engines


async def engine_params(request: Request) -> Response:
    """``GET /v1/engines/[{model_type}/]{model_name}``: ``{engine: [params...]}``, or ``{engine: reason}``."""
    st = state(request)
    name = request.path_params["model_name"]
    wanted = request.path_params.get("model_type")
    family = st.registry.get(name)
    if wanted is not None and _known_type(wanted) != family.model_type:
        raise InvalidRequest(f"model {name!r} is a {family.model_type} model, not {wanted}", param="model_type")
    rows = await asyncio.to_thread(engine_matches, st, name)
    out: dict[str, Any] = {}
    for row in rows:
        if not row["available"]:
            out[row["engine"]] = "; ".join(row["reasons"]) or f"engine {row['engine']} cannot serve {name}"
            continue
        grouped: dict[tuple[str, Any], dict[str, Any]] = {}
        for spec in row["specs"]:
            key = (spec["format"], spec["size_in_billions"])
            entry = grouped.setdefault(
                key,
                {
                    "model_name": family.name,
                    "model_format": spec["format"],
                    "model_size_in_billions": _size_out(spec["size_in_billions"]),
                    "quantizations": [],
                },
            )
            entry["quantizations"].append(spec["quantization"])
        out[row["engine"]] = list(grouped.values())
    return json_response(out)


def _size_out(size: float | None) -> int | str | None:
    """Xinference writes 7 for 7B and "0_5" for 0.5B."""
    if size is None:
        return None
    return int(size) if float(size).is_integer() else str(size).replace(".", "_")


# ---------------------------------------------------------------- cluster of one


def _address(request: Request) -> str:
    host, port = request.url.hostname or "127.0.0.1", request.url.port
    return f"{host}:{port}" if port else host


async def workers(request: Request) -> Response:
    """``GET /v1/workers``: this server is the only worker; its running models by uid."""
    st = state(request)
    models = {uid: m.describe() for uid, m in st.manager.models.items()}
    return json_response([{"work-ip": _address(request), "models": models}])


async def supervisor(request: Request) -> Response:
    return json_response({"supervisor_ip": _address(request)})


async def address(request: Request) -> Response:
    return json_response(_address(request))


async def abort_cluster(request: Request) -> Response:
    """``DELETE /v1/clusters``: stop this server (and its replicas), as Xinference stops its cluster."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)  # after the answer is sent
    return json_response(True)


async def relaunches(request: Request) -> Response:
    """No API, supervisor or worker process of its own to relaunch: none were ever relaunched."""
    return json_response([])


async def relaunch_status(request: Request) -> Response:
    op = request.path_params["operation_id"]
    raise InvalidRequest(f"no relaunch operation {op!r}: xinf runs as one process and never relaunched one")


async def relaunch(request: Request) -> Response:
    what = request.url.path.rsplit("/", 2)[-2] if "/workers/" in request.url.path else request.url.path.split("/")[2]
    raise InvalidRequest(
        f"xinf runs as one process with no separate {what} process to relaunch; restart `xinf serve` instead "
        "(models marked for autostart come back by themselves)"
    )


# ---------------------------------------------------------------- models


async def instances(request: Request) -> Response:
    """``GET /v1/models/instances``: Xinference's InstanceInfo for each running model."""
    st = state(request)
    name = request.query_params.get("model_name")
    uid = request.query_params.get("model_uid")
    out = []
    for model in sorted(st.manager.models.values(), key=lambda m: m.uid):
        if (name and model.spec.name != name) or (uid and model.uid != uid):
            continue
        status = {"ready": "READY", "launching": "CREATING", "failed": "ERROR"}.get(model.status, model.status.upper())
        out.append(
            {
                "model_name": model.spec.name,
                "model_uid": model.uid,
                "model_version": None,
                "model_ability": model.spec.abilities,
                "replica": len(model.replicas),
                "status": status,
                "instance_created_ts": model.created,
                "n_worker": 1,
                "replica_statuses": [
                    {
                        "replica_id": r.index,
                        "replica_model_uid": f"{model.uid}-{r.index}",
                        "worker_address": _address(request),
                        "status": r.status.upper(),
                        "model_state": r.status,
                        "created_ts": model.created,
                        "error_message": None,
                        "gpu_idx": r.launch.placement.devices or None,
                    }
                    for r in model.replicas
                ],
            }
        )
    return json_response(out)


async def vllm_supported(request: Request) -> Response:
    """``GET /v1/models/vllm-supported``: the families the vLLM engine serves (empty without it)."""
    try:
        from xinf_vllm.families import SUPPORTED_FAMILIES  # a plain list: no vLLM import
    except ImportError:
        families: list[str] = []
    else:
        families = list(SUPPORTED_FAMILIES)
    return json_response({"chat": families, "generate": families})


# ---------------------------------------------------------------- requests


class Abort(msgspec.Struct, kw_only=True):
    block_duration: float = 30


async def abort_request(request: Request) -> Response:
    """Stop a request by its id on whichever replica serves it; "NO_OP" (and a block) when not in flight."""
    st = state(request)
    uid = request.path_params["uid"]
    st.manager.get(uid)
    body = await read_body(request, st.max_body)
    req = decode(body, Abort) if body.strip() else Abort()
    result = st.requests.abort(uid, request.path_params["request_id"], req.block_duration)
    return json_response({"msg": result})


async def request_progress(request: Request) -> Response:
    st = state(request)
    return json_response({"progress": st.requests.progress(request.path_params["request_id"])})


# ---------------------------------------------------------------- registrations of every type


async def typed_registrations(request: Request) -> Response:
    """Model types xinf serves list their registrations; the others list none."""
    if _served_type(request.path_params["model_type"]) is not None:
        return await registrations(request)
    _known_type(request.path_params["model_type"])
    return json_response([])


# ---------------------------------------------------------------- model types without an engine here


async def unserved(request: Request) -> Response:
    """A model-handle route of a type no engine here serves: 400 naming the model, as for a wrong model."""
    st = state(request)
    kind = _UNSERVED.get(request.url.path, "this kind of")
    uid = await _model_field(request)
    if uid:
        model = st.manager.get(uid)
        raise InvalidRequest(
            f"model {uid!r} is a {model.spec.model_type} model and cannot serve {request.url.path}; "
            f"xinf serves no {kind} models",
            param="model",
        )
    raise InvalidRequest(f"xinf serves no {kind} models ({request.url.path})", param="model")


async def _model_field(request: Request) -> str | None:
    """The ``model`` of a JSON or multipart body (read whole, so the client can finish sending it)."""
    body = await read_body(request, state(request).max_body)
    if request.headers.get("content-type", "").startswith("multipart/"):
        found = _FORM_MODEL.search(body)
        return found.group(1).decode(errors="replace") if found else None
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    value = data.get("model") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


_FORM_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)\r\n')  # headers, blank line, value


# path -> what kind of model it needs; other modules' routes for these come first in the table and win
_UNSERVED = {
    "/v1/rerank": "rerank",
    "/v1/images/generations": "image",
    "/v1/images/variations": "image",
    "/v1/images/edits": "image",
    "/v1/images/inpainting": "image",
    "/v1/images/ocr": "image",
    "/v1/audio/transcriptions": "audio",
    "/v1/audio/translations": "audio",
    "/v1/audio/speech": "audio",
    "/v1/audio/embeddings": "audio",
    "/v1/video/generations": "video",
    "/v1/video/generations/image": "video",
    "/v1/video/generations/flf": "video",
    "/v1/worlds/generations": "world",
    "/v1/flexible/infers": "flexible",
}


def routes() -> list[BaseRoute]:
    """Routes that must come before ``/v1/models/{uid}`` and the other catch-alls."""
    return [
        Route("/token", token, methods=["POST"]),
        Route("/v1/convert_ids_to_tokens", convert_ids_to_tokens, methods=["POST"]),
        Route("/v1/models/instances", instances, methods=["GET"]),
        Route("/v1/models/vllm-supported", vllm_supported, methods=["GET"]),
        Route("/v1/models/{uid}/requests/{request_id}/abort", abort_request, methods=["POST"]),
        Route("/v1/requests/{request_id}/progress", request_progress, methods=["GET"]),
        Route("/v1/engines/{model_type}/{model_name}", engine_params, methods=["GET"]),
        Route("/v1/engines/{model_name}", engine_params, methods=["GET"]),
        Route("/v1/workers", workers, methods=["GET"]),
        Route("/v1/supervisor", supervisor, methods=["GET"]),
        Route("/v1/address", address, methods=["GET"]),
        Route("/v1/clusters", abort_cluster, methods=["DELETE"]),
        Route("/v1/api-relaunches", relaunches, methods=["GET"]),
        Route("/v1/supervisor-relaunches", relaunches, methods=["GET"]),
        Route("/v1/worker-relaunches", relaunches, methods=["GET"]),
        Route("/v1/api-relaunches/{operation_id}", relaunch_status, methods=["GET"]),
        Route("/v1/supervisor-relaunches/{operation_id}", relaunch_status, methods=["GET"]),
        Route("/v1/worker-relaunches/{operation_id}", relaunch_status, methods=["GET"]),
        Route("/v1/api/relaunch", relaunch, methods=["POST"]),
        Route("/v1/supervisor/relaunch", relaunch, methods=["POST"]),
        Route("/v1/workers/{worker}/relaunch", relaunch, methods=["POST"]),
        Route("/v1/model_registrations/{model_type}", typed_registrations, methods=["GET"]),
    ]


def fallback_routes() -> list[BaseRoute]:
    """Last in the table: model-handle routes of types no module here serves."""
    return [Route(path, unserved, methods=["POST"]) for path in _UNSERVED]
