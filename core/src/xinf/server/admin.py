"""Xinference-compatible management routes: launch, terminate, engines, registrations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from xinf import launchinputs, placement
from xinf.errors import InvalidRequest, NotFound
from xinf.registry import MODEL_TYPES, Family, parse_family
from xinf.schemas import RegisterRequest
from xinf.server.http import decode, json_response, query_flag, read_body
from xinf.server.launchbody import split_launch
from xinf.server.state import State, state

log = logging.getLogger(__name__)


async def launch(request: Request) -> Response:
    st = state(request)
    body = decode(await read_body(request, st.max_body), dict[str, Any])
    req, options = split_launch(body)
    launchinputs.check_launch(req, options, st.settings)
    if query_flag(request, "dry_run", False):
        model, placements = await asyncio.to_thread(st.manager.dry_run, req, options)
        return json_response(
            {
                "model_uid": model.uid,
                "model_name": model.spec.name,
                "model_engine": model.engine,
                "model_format": model.spec.format,
                "quantization": model.spec.quantization,
                "replicas": [msgspec.to_builtins(p) for p in placements],
            }
        )
    model = await st.manager.prepare(req, options)
    if req.autostart:
        from xinf.server.lifecycle import autostart

        autostart(st).upsert({"launch": {**body, "model_uid": model.uid}})
    if query_flag(request, "wait_ready", True):
        await st.manager.start(model)
    else:
        task = asyncio.ensure_future(st.manager.start(model))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors show in the model's status
    return json_response({"model_uid": model.uid})


class AddReplicas(msgspec.Struct, kw_only=True):
    replica: int = 1
    n_gpu: int | str | None = "auto"
    model_engine: str | None = None
    replica_config: Any = None


async def add_replicas(request: Request) -> Response:
    st = state(request)
    uid = request.path_params["uid"]
    body = await read_body(request, st.max_body)
    req = decode(body, AddReplicas) if body.strip() else AddReplicas()
    if req.replica < 1:
        raise InvalidRequest("replica must be at least 1", param="replica")
    model = st.manager.get(uid)
    if req.model_engine and req.model_engine != model.engine:
        raise InvalidRequest(f"{uid} runs on {model.engine}; replicas use the same engine", param="model_engine")
    added = await st.manager.add_replicas(uid, req.replica, req.n_gpu)
    return json_response({"model_uid": uid, "replica": len(added), "replicas": added})


async def remove_replica(request: Request) -> Response:
    uid = request.path_params["uid"]
    raw = request.path_params["replica_id"]
    try:
        index = int(raw.rsplit("-", 1)[-1])  # Xinference names replicas "<uid>-<n>"
    except ValueError:
        raise InvalidRequest(f"replica id {raw!r} is not a number", param="replica_id") from None
    remaining = await state(request).manager.remove_replica(uid, index)
    return json_response({"model_uid": uid, "remaining_replicas": remaining})


async def describe(request: Request) -> Response:
    model = state(request).manager.get(request.path_params["uid"])
    return json_response(model.describe())


async def terminate(request: Request) -> Response:
    uid = request.path_params["uid"]
    await state(request).manager.terminate(uid)
    return json_response({"model_uid": uid, "status": "terminated"})


# ---------------------------------------------------------------- engines


async def engines(request: Request) -> Response:
    st = state(request)
    data: dict[str, Any] = {"engines": [msgspec.to_builtins(e) | {"ok": e.ok} for e in st.plugins.engines.values()]}
    name = request.query_params.get("model") or request.path_params.get("model_name")
    if name:
        data["model"] = name
        data["matches"] = await asyncio.to_thread(engine_matches, st, name)
    return json_response(data)


def engine_matches(st: State, name: str) -> list[dict[str, Any]]:
    """For each engine: the specs of ``name`` it can serve here, or why it cannot."""
    hardware = st.manager.hardware()
    specs = st.registry.candidates(name)
    table: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for match in st.plugins.match(spec, hardware):
            row = table.setdefault(
                match.engine, {"engine": match.engine, "available": False, "specs": [], "reasons": []}
            )
            if match.ok:
                row["available"] = True
                row["specs"].append(
                    {
                        "format": spec.format,
                        "size_in_billions": spec.size_in_billions,
                        "quantization": spec.quantization,
                        "score": match.score,
                    }
                )
            elif match.reason not in row["reasons"]:
                row["reasons"].append(match.reason)
    rows = sorted(table.values(), key=lambda r: (not r["available"], r["engine"]))
    for row in rows:
        if row["available"]:
            row["reasons"] = []
    return rows


# ---------------------------------------------------------------- registrations


def _model_type(request: Request) -> str:
    model_type = request.path_params["model_type"]
    for known in MODEL_TYPES:
        if model_type.lower() == known.lower():
            return known
    raise InvalidRequest(f"xinf serves no {model_type!r} models (served: {', '.join(MODEL_TYPES)})", param="model_type")


async def register(request: Request) -> Response:
    st = state(request)
    model_type = _model_type(request)
    req = decode(await read_body(request, st.max_body), RegisterRequest)
    if isinstance(req.model, str):
        try:
            raw = msgspec.json.decode(req.model)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"model is not valid JSON: {exc}", param="model") from None
    else:
        raw = req.model
    if not isinstance(raw, dict):
        raise InvalidRequest("model must be a JSON object", param="model")
    if "model_name" not in raw:
        raw.setdefault("model_type", model_type)
    family = parse_family(raw, model_type)
    if family.model_type != model_type:
        raise InvalidRequest(f"model_type {family.model_type!r} does not match the URL's {model_type!r}")
    st.registry.register(family, persist=req.persist)
    return json_response({"model_name": family.name, "persist": req.persist})


async def registrations(request: Request) -> Response:
    st = state(request)
    model_type = _model_type(request)
    detailed = query_flag(request, "detailed", False)
    out = []
    for family in st.registry.list_families(model_type=model_type):
        row: dict[str, Any] = {"model_name": family.name, "is_builtin": family.builtin}
        if detailed:
            row.update(_family_json(family))
        out.append(row)
    return json_response(out)


async def registration(request: Request) -> Response:
    st = state(request)
    return json_response(_family_json(_typed(st, _model_type(request), request.path_params["name"])))


async def unregister(request: Request) -> Response:
    st = state(request)
    _typed(st, _model_type(request), request.path_params["name"])
    family = st.registry.unregister(request.path_params["name"])
    return json_response({"model_name": family.name})


def _typed(st: State, model_type: str, name: str) -> Family:
    """The registration ``name`` of ``model_type``: another type's model of that name is not it."""
    family = st.registry.get(name)
    if family.model_type != model_type:
        raise NotFound(f"no {model_type} model {name!r} is registered (it is a {family.model_type} model)")
    return family


def _family_json(family: Family) -> dict[str, Any]:
    """Our fields, plus Xinference's names for the ones its clients read."""
    data: dict[str, Any] = msgspec.to_builtins(family)
    data.update(
        model_type=family.model_type,
        model_name=family.name,
        model_family=family.family or family.name,
        model_ability=family.abilities,
        model_description=family.description,
        context_length=family.context_length,
        is_builtin=family.builtin,
    )
    return data


# ---------------------------------------------------------------- cluster


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def cluster_auth(request: Request) -> Response:
    s = state(request).settings
    return json_response({"auth": bool(s.api_key or s.inference_api_keys or s.api_keys_file)})


async def devices(request: Request) -> Response:
    st = state(request)
    hardware = await asyncio.to_thread(st.manager.hardware)
    ledger = st.manager.ledger
    cluster = st.manager.cluster
    addresses = {n.id: n.address for n in hardware.nodes}
    return json_response(
        {
            "system": hardware.system,
            "cpu_count": hardware.cpu_count,
            "memory_total": hardware.memory_total,
            "memory_available": hardware.memory_available,
            "memory_reserved": ledger.reserved(placement.HOST),  # by replicas of this machine (outside a cluster)
            "cores": hardware.cores,
            "cores_held": ledger.cores.owners(None),  # replica -> its cores (outside a cluster)
            "cluster": cluster.address if cluster is not None else None,
            "nodes": [
                {
                    **msgspec.to_builtins(n),
                    "reserved": ledger.reserved(placement.HOST, n.id),
                    "replicas": sorted(ledger.on_node(n.id)),
                    "cores_held": ledger.cores.owners(n.id),
                }
                for n in hardware.nodes
            ],
            "devices": [
                {
                    **msgspec.to_builtins(d),
                    "node_address": addresses.get(d.node or ""),
                    "reserved": ledger.reserved(d.index, d.node),
                    "available": ledger.free(d),
                    "replicas": ledger.owners(d.index, d.node),
                }
                for d in hardware.devices
            ],
        }
    )


# ---------------------------------------------------------------- launch progress


async def progress(request: Request) -> Response:
    return json_response(state(request).manager.progress(request.path_params["uid"]))


async def cancel(request: Request) -> Response:
    uid = request.path_params["uid"]
    await state(request).manager.cancel(uid)
    return json_response({"model_uid": uid, "status": "cancelled"})


# ---------------------------------------------------------------- download cache


async def cached_models(request: Request) -> Response:
    from xinf import downloads

    st = state(request)
    entries = await asyncio.to_thread(downloads.cached, st.settings)
    name = request.query_params.get("model_name")
    if name:
        entries = [e for e in entries if name.lower() in e["repository"].lower()]
    in_use = st.manager.paths_in_use()
    for e in entries:
        e["in_use"] = any(p == e["path"] or p.startswith(e["path"] + "/") for p in in_use)
    return json_response({"list": entries})


async def cached_files(request: Request) -> Response:
    from xinf import downloads

    st = state(request)
    entry = await asyncio.to_thread(downloads.find, st.settings, _model_version(request))
    return json_response({"model_version": entry["model_version"], "paths": [entry["path"]]})


async def remove_cached(request: Request) -> Response:
    from xinf import downloads

    st = state(request)
    entry = await asyncio.to_thread(downloads.remove, st.settings, _model_version(request), st.manager.paths_in_use())
    return json_response({"result": True, "model_version": entry["model_version"], "path": entry["path"]})


def _model_version(request: Request) -> str:
    version = request.query_params.get("model_version")
    if not version:
        raise InvalidRequest(
            "give model_version: hub/org/name as listed by GET /v1/cache/models", param="model_version"
        )
    return version


# ---------------------------------------------------------------- virtual environments


async def virtualenvs(request: Request) -> Response:
    from xinf import virtualenv

    st = state(request)
    entries = await asyncio.to_thread(virtualenv.listing, st.settings, st.manager.paths_in_use())
    return json_response({"list": entries})


async def remove_virtualenv(request: Request) -> Response:
    from xinf import virtualenv

    st = state(request)
    name = request.path_params["name"]
    removed = await asyncio.to_thread(virtualenv.remove, st.settings, name, st.manager.paths_in_use())
    return json_response(removed)
