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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from xinf import storage
from xinf.errors import InvalidRequest, NotFound, XinfError
from xinf.manager import ModelManager
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.server import adapters as adapter_routes
from xinf.server import (
    admin,
    anthropic,
    audio,
    completions,
    embeddings,
    imageedits,
    images,
    lifecycle,
    openai,
    rerank,
    security,
    web,
    xinference,
)
from xinf.server.http import error_response, json_response
from xinf.server.openapi import document
from xinf.server.request_id import RequestId
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

        request.app.state.exporter = Exporter(st.manager.models, st.manager.pool)
    body, content_type = request.app.state.exporter.render()
    return Response(body, media_type=content_type)


def routes(settings: Settings) -> list[BaseRoute]:
    table: list[BaseRoute] = [
        # First: starlette tries routes in order, and these take most requests.
        Route("/v1/chat/completions", openai.chat_completions, methods=["POST"]),
        Route("/v1/completions", completions.completions, methods=["POST"]),
        *xinference.routes(),  # fixed paths ahead of /v1/models/{uid} and friends
        *lifecycle.routes(),
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
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/messages", anthropic.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", anthropic.count_tokens, methods=["POST"]),
        Route("/v1/rerank", rerank.rerank, methods=["POST"]),
        Route("/v1/audio/transcriptions", audio.transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", audio.translations, methods=["POST"]),
        Route("/v1/audio/speech", audio.speech, methods=["POST"]),
        Route("/v1/images/generations", images.generations, methods=["POST"]),
        Route("/v1/images/edits", imageedits.edits, methods=["POST"]),
        Route("/v1/images/variations", imageedits.edits, methods=["POST"]),
        Route("/v1/images/files/{name}", images.image_file, methods=["GET"], name="image_file"),
        Route("/v1/engines", admin.engines, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}", admin.registrations, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}", admin.register, methods=["POST"]),
        Route("/v1/model_registrations/{model_type}/{name}", admin.registration, methods=["GET"]),
        Route("/v1/model_registrations/{model_type}/{name}", admin.unregister, methods=["DELETE"]),
        Route("/v1/cluster/devices", admin.devices, methods=["GET"]),
        Route("/v1/cluster/auth", admin.cluster_auth, methods=["GET"]),
    ]
    if not settings.disable_metrics:  # XINFERENCE_DISABLE_METRICS=1: no route at all (404)
        table.append(Route("/metrics", metrics, methods=["GET"]))
    return table + web.routes() + xinference.fallback_routes()


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
    response = error_response(err)
    if exc.headers:  # 405 carries Allow
        response.headers.update(exc.headers)
    return response


async def on_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away (or a body timeout closed it) while its body was read: nobody to answer.
    return Response(status_code=499)


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
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(_launch(manager, body)) for body in launch_at_start or []
        ]
        tasks.append(asyncio.ensure_future(asyncio.to_thread(storage.sweep, settings.home)))
        lifecycle.autostart(st).start_all()  # models marked for autostart come back with the server
        manager.open_pools()
        try:
            yield
        finally:
            lifecycle.autostart(st).close()
            for task in tasks:
                task.cancel()
            await manager.shutdown()

    app = Starlette(
        routes=routes(settings),
        middleware=[Middleware(RequestId), *security.middleware(settings)],
        lifespan=lifespan,
        exception_handlers={
            XinfError: on_xinf_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_disconnect,
            Exception: on_crash,
        },
    )
    app.state.xinf = st
    app.state.openapi = None
    app.state.exporter = None
    return app


async def _launch(manager: ModelManager, body: dict[str, Any]) -> None:
    from xinf.server.launchbody import split_launch

    try:
        req, options = split_launch(body)
        model = await manager.launch(req, options)
        log.info("launched %s at start-up", model.uid)
    except XinfError as exc:
        log.error("could not launch %s at start-up: %s", body.get("model_name"), exc.message)


__all__ = ["create_app"]
