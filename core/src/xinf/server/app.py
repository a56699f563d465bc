"""The starlette application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from xinf.errors import InvalidRequest, NotFound, XinfError
from xinf.manager import ModelManager
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.server import access, admin, openai, web
from xinf.server import adapters as adapter_routes
from xinf.server.http import error_response, json_response
from xinf.server.openapi import document
from xinf.server.state import State, state
from xinf.settings import Settings

if TYPE_CHECKING:
    from xinf.cluster import Cluster

log = logging.getLogger("xinf.server")


async def openapi_json(request: Request) -> Response:
    if request.app.state.openapi is None:  # built on first use: start-up stays fast
        request.app.state.openapi = document()
    return json_response(request.app.state.openapi)


async def metrics(request: Request) -> Response:
    st = state(request)
    if request.app.state.exporter is None:  # prometheus_client is imported on the first scrape
        from xinf.metrics import Exporter

        request.app.state.exporter = Exporter(st.manager.models)
    body, content_type = request.app.state.exporter.render()
    return Response(body, media_type=content_type)


def routes(settings: Settings) -> list[BaseRoute]:
    table: list[BaseRoute] = [
        Route("/health", admin.health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/v1/models", openai.list_models, methods=["GET"]),
        Route("/v1/models", admin.launch, methods=["POST"]),
        Route("/v1/models/{uid}", admin.describe, methods=["GET"]),
        Route("/v1/models/{uid}", admin.terminate, methods=["DELETE"]),
        Route("/v1/models/{uid}/progress", admin.progress, methods=["GET"]),
        Route("/v1/models/{uid}/cancel", admin.cancel, methods=["POST"]),
        Route("/v1/cache/models", admin.cached_models, methods=["GET"]),
        Route("/v1/cache/models", admin.remove_cached, methods=["DELETE"]),
        Route("/v1/cache/models/files", admin.cached_files, methods=["GET"]),
        Route("/v1/virtualenvs", admin.virtualenvs, methods=["GET"]),
        Route("/v1/virtualenvs/{name}", admin.remove_virtualenv, methods=["DELETE"]),
        Route("/v1/models/{uid}/replicas", admin.add_replicas, methods=["POST"]),
        Route("/v1/models/{uid}/adapters", adapter_routes.add, methods=["POST"]),
        Route("/v1/models/{uid}/adapters/{name}", adapter_routes.remove, methods=["DELETE"]),
        Route("/v1/models/{uid}/replicas/{replica_id}", admin.remove_replica, methods=["DELETE"]),
        Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/v1/completions", openai.completions, methods=["POST"]),
        Route("/v1/embeddings", openai.embeddings, methods=["POST"]),
        Route("/v1/engines", admin.engines, methods=["GET"]),
        Route("/v1/engines/{model_name}", admin.engines, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}", admin.registrations, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}", admin.register, methods=["POST"]),
        Route("/v1/model_registrations/{model_type}/{name}", admin.registration, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}/{name}", admin.unregister, methods=["DELETE"]),
        Route("/v1/cluster/devices", admin.devices, methods=["GET"]),
        Route("/v1/cluster/auth", admin.cluster_auth, methods=["GET"]),
    ]
    if not settings.disable_metrics:  # XINFERENCE_DISABLE_METRICS=1: no route at all (404)
        table.append(Route("/metrics", metrics, methods=["GET"]))
    return table + web.routes()


async def on_xinf_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, XinfError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: XinfError = NotFound(f"no route {request.method} {request.url.path}", code="route_not_found")
    else:
        err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code
    return error_response(err)


async def on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    err = XinfError(f"internal error: {type(exc).__name__}: {exc}")
    return error_response(err)


def create_app(
    settings: Settings | None = None,
    *,
    plugins: PluginHost | None = None,
    registry: Registry | None = None,
    launch_at_start: list[dict[str, Any]] | None = None,
    cluster: Cluster | None = None,
) -> Starlette:
    """The server; with ``cluster`` its replicas may run on the cluster's other machines."""
    settings = settings or Settings.from_env()
    plugins = plugins or PluginHost.discover()
    registry = registry or Registry(settings.home)
    manager = ModelManager(settings, registry, plugins, cluster=cluster)
    st = State(settings=settings, registry=registry, plugins=plugins, manager=manager, max_body=settings.max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(_launch(manager, body)) for body in launch_at_start or []]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await manager.shutdown()

    middleware = []
    if settings.allowed_ips or settings.api_key:
        allowed = access.IPAllowlist(access.parse_networks(settings.allowed_ips)) if settings.allowed_ips else None
        keys = [settings.api_key] if settings.api_key else []
        middleware.append(Middleware(access.AccessControl, allowed=allowed, api_keys=keys))
    app = Starlette(
        routes=routes(settings),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={XinfError: on_xinf_error, HTTPException: on_http_error, Exception: on_crash},
    )
    app.state.xinf = st
    app.state.openapi = None
    app.state.exporter = None
    return app


async def _launch(manager: ModelManager, body: dict[str, Any]) -> None:
    from xinf.server.admin import split_launch

    try:
        req, options = split_launch(body)
        model = await manager.launch(req, options)
        log.info("launched %s at start-up", model.uid)
    except XinfError as exc:
        log.error("could not launch %s at start-up: %s", body.get("model_name"), exc.message)


__all__ = ["create_app"]
