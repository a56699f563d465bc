"""Models that outlive the server (autostart) and models reloaded in place (reload), as Xinference routes them.

Autostart entries are Xinference's: ``{"enabled", "priority", "max_retries",
"retry_interval_seconds", "launch": {...launch body...}}``, kept in
``XINFERENCE_HOME/autostart.json``.  Every enabled entry is launched when the
server starts (lowest priority number first, retried as the entry says) and
when it is added.  A launch with ``"autostart": true`` adds its own entry.

A reload drains the model's requests, stops it and launches it again under the
same uid with its launch body updated by ``model_config``; if that fails the
old configuration is launched again and the reload reports the error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from xinf.errors import Conflict, InvalidRequest, XinfError
from xinf.schemas import LAUNCH_FIELDS
from xinf.server.http import decode, json_response, read_body
from xinf.server.launchbody import split_launch
from xinf.server.state import State, state
from xinf.storage import atomic_write

log = logging.getLogger(__name__)
DEFAULTS = {"enabled": True, "priority": 100, "max_retries": 3, "retry_interval_seconds": 30}


# ---------------------------------------------------------------- autostart store


class Autostart:
    """The autostart entries of one server and what became of each."""

    def __init__(self, st: State):
        self.st = st
        self.path = st.settings.home / "autostart.json"
        self.states: dict[str, dict[str, Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def entries(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s", self.path, exc)
            return []
        return [e for e in data.get("models", []) if isinstance(e, dict)]

    def save(self, entries: list[dict[str, Any]]) -> None:
        atomic_write(self.path, json.dumps({"models": entries}, indent=2).encode())

    def upsert(self, raw: Any) -> dict[str, Any]:
        entry = normalize(raw)
        uid = entry["launch"]["model_uid"]
        entries = [e for e in self.entries() if e["launch"].get("model_uid") != uid] + [entry]
        self.save(entries)
        self.states.pop(uid, None)
        return entry

    def remove(self, uid: str) -> None:
        self.save([e for e in self.entries() if e["launch"].get("model_uid") != uid])
        self.states.pop(uid, None)

    def config(self) -> dict[str, Any]:
        models = []
        for entry in self.entries():
            uid = entry["launch"]["model_uid"]
            state = dict(self.states.get(uid, {}))
            running = self.st.manager.models.get(uid)
            if running is not None:
                state["instance_status"] = running.status
            models.append({**entry, "state": state})
        return {"models": models}

    def summary(self) -> dict[str, Any]:
        return {"models": [{"enabled": e["enabled"], "model_uid": e["launch"]["model_uid"]} for e in self.entries()]}

    # ------------------------------------------------------------ launching

    def start_all(self) -> None:
        """Launch every enabled entry that is not running, lowest priority number first, one after another."""
        entries = sorted((e for e in self.entries() if e["enabled"]), key=lambda e: e["priority"])
        if entries:
            self._spawn(self._run(entries))

    def start_one(self, entry: dict[str, Any]) -> None:
        if entry["enabled"]:
            self._spawn(self._run([entry]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            await self._launch(entry)

    async def _launch(self, entry: dict[str, Any]) -> None:
        uid = entry["launch"]["model_uid"]
        state = self.states.setdefault(uid, {"status": "pending", "attempts": 0, "error": None})
        for attempt in range(1, entry["max_retries"] + 1):
            if uid in self.st.manager.models:
                state.update(status="running", error=None)
                return
            state.update(status="launching", attempts=attempt)
            try:
                req, options = split_launch(dict(entry["launch"]))
                await self.st.manager.launch(req, options)
            except XinfError as exc:
                state.update(status="failed", error=exc.message)
                log.error("autostart of %s failed (try %d of %d): %s", uid, attempt, entry["max_retries"], exc.message)
                if attempt < entry["max_retries"]:
                    await asyncio.sleep(entry["retry_interval_seconds"])
                continue
            state.update(status="running", error=None)
            log.info("autostarted %s", uid)
            return

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()


def normalize(raw: Any) -> dict[str, Any]:
    """An autostart entry in Xinference's shape: a ``launch`` body (or a bare launch body) and its retry policy."""
    if not isinstance(raw, dict):
        raise InvalidRequest("an autostart entry must be a JSON object")
    launch = raw.get("launch")
    if launch is None and "model_name" in raw:
        launch = {k: v for k, v in raw.items() if k not in (*DEFAULTS, "state")}
    if not isinstance(launch, dict) or not launch.get("model_name"):
        raise InvalidRequest("an autostart entry needs a launch object with model_name", param="launch")
    launch = {k: v for k, v in launch.items() if v is not None and k != "autostart"}
    launch.setdefault("model_uid", launch["model_name"])
    split_launch(dict(launch))  # the same checks as a launch: a bad entry is refused now, not at the next start
    entry: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = raw.get(key, default)
        if key == "enabled":
            entry[key] = bool(value)
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"autostart {key} must be an integer", param=key)
        if key != "priority" and value < 1:
            raise InvalidRequest(f"autostart {key} must be at least 1", param=key)
        entry[key] = value
    entry["launch"] = launch
    return entry


def autostart(st: State) -> Autostart:
    found = st.extras.get("autostart")
    if found is None:
        found = st.extras["autostart"] = Autostart(st)
    return found


async def get_autostart(request: Request) -> Response:
    return json_response(autostart(state(request)).config())


async def autostart_summary(request: Request) -> Response:
    return json_response(autostart(state(request)).summary())


async def upsert_autostart(request: Request) -> Response:
    st = state(request)
    store = autostart(st)
    entry = store.upsert(decode(await read_body(request, st.max_body), dict[str, Any]))
    store.start_one(entry)  # as Xinference does: an added entry starts now, not only at the next start
    return json_response(store.config())


async def remove_autostart(request: Request) -> Response:
    store = autostart(state(request))
    store.remove(request.path_params["uid"])
    return json_response(store.summary())


# ---------------------------------------------------------------- reload


class ReloadRequest(msgspec.Struct, kw_only=True):
    model_config: dict[str, Any] = msgspec.field(default_factory=dict)
    drain_timeout: float = 300
    python_executable: str | None = None


def launch_body(st: State, uid: str) -> dict[str, Any]:
    """The launch body that made the running model ``uid``: its launch fields and engine options."""
    model = st.manager.get(uid)
    body = msgspec.to_builtins(model.request)
    body.update(model.options)
    body["model_uid"] = uid
    return {k: v for k, v in body.items() if v is not None}


async def reload(request: Request) -> Response:
    st = state(request)
    uid = request.path_params["uid"]
    body = await read_body(request, st.max_body)
    req = decode(body, ReloadRequest) if body.strip() else ReloadRequest()
    if req.python_executable:
        raise InvalidRequest("python_executable is not supported: use virtual_env_packages", param="python_executable")
    old = launch_body(st, uid)
    if st.manager.models[uid].status != "ready":
        raise Conflict(f"model {uid!r} is {st.manager.models[uid].status}; only a ready model reloads")
    reloads: dict[str, dict[str, Any]] = st.extras.setdefault("reloads", {})
    if reloads.get(uid, {}).get("stage") in ("draining", "loading"):
        raise Conflict(f"model {uid!r} is already reloading", param="model_uid")
    new = {**old, **req.model_config, "model_uid": uid}
    split_launch(dict(new))  # refuse a bad configuration before stopping anything
    op = {
        "operation_id": secrets.token_hex(8),
        "model_uid": uid,
        "stage": "draining",
        "status": "running",
        "error": None,
        "model_config": redacted(req.model_config),
        "created_at": time.time(),
        "finished_at": None,
    }
    reloads[uid] = op
    task = asyncio.ensure_future(_reload(st, op, old, new, req.drain_timeout))
    st.extras.setdefault("reload_tasks", set()).add(task)
    task.add_done_callback(st.extras["reload_tasks"].discard)
    return json_response(op, status=202)


async def _reload(st: State, op: dict[str, Any], old: dict[str, Any], new: dict[str, Any], drain: float) -> None:
    uid = op["model_uid"]
    model = st.manager.models.get(uid)
    deadline = time.monotonic() + drain
    while model is not None and model.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    op["stage"] = "loading"
    try:
        await st.manager.terminate(uid)
        req, options = split_launch(dict(new))
        await st.manager.launch(req, options)
        op.update(stage="ready", status="ready")
    except XinfError as exc:
        op.update(stage="error", status="error", error=exc.message)
        log.error("reload of %s failed, launching its old configuration: %s", uid, exc.message)
        if uid not in st.manager.models:
            try:
                req, options = split_launch(dict(old))
                await st.manager.launch(req, options)
            except XinfError as again:
                op["error"] += f"; the old configuration failed too: {again.message}"
    op["finished_at"] = time.time()


async def reload_status(request: Request) -> Response:
    st = state(request)
    uid = request.path_params["uid"]
    op = st.extras.get("reloads", {}).get(uid)
    if op is None:
        st.manager.get(uid)
        return json_response({"model_uid": uid, "stage": None, "status": "none", "error": None})
    return json_response(op)


async def reload_config(request: Request) -> Response:
    """What a reload may change: every launch field and engine option, with the values the model runs with."""
    st = state(request)
    uid = request.path_params["uid"]
    values = launch_body(st, uid)
    fields = {name: "launch" for name in sorted(LAUNCH_FIELDS - {"model_uid", "size_in_billions"})}
    fields.update({name: "engine option" for name in st.manager.models[uid].options})
    return json_response({"model_uid": uid, "parameters": fields, "values": redacted(values)})


def redacted(body: dict[str, Any]) -> dict[str, Any]:
    """A launch body fit to show: environment values may be secrets (tokens), so only their names show."""
    if isinstance(body.get("envs"), dict):
        body = {**body, "envs": dict.fromkeys(body["envs"], "***")}
    return body


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/autostart/models", get_autostart, methods=["GET"]),
        Route("/v1/autostart/models", upsert_autostart, methods=["POST"]),
        Route("/v1/autostart/models/summary", autostart_summary, methods=["GET"]),
        Route("/v1/autostart/models/{uid}", remove_autostart, methods=["DELETE"]),
        Route("/v1/models/{uid}/reload", reload, methods=["POST"]),
        Route("/v1/models/{uid}/reload", reload_status, methods=["GET"]),
        Route("/v1/models/{uid}/reload/config", reload_config, methods=["GET"]),
    ]
