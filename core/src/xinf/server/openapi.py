"""The OpenAPI document, generated from the msgspec request schemas."""

from __future__ import annotations

from typing import Any

import msgspec

from xinf import __version__
from xinf.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, LaunchRequest, RegisterRequest
from xinf.schemas_audio import SpeechBody
from xinf.schemas_images import ImageBody
from xinf.schemas_rerank import RerankBody
from xinf.server.anthropic_schema import CountTokensRequest, MessagesRequest

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}

# (method, path, summary, request schema name or None, path parameters)
ROUTES: list[tuple[str, str, str, str | None, list[str]]] = [
    ("get", "/", "The web page (HTML, open without an API key; its files are under /web/)", None, []),
    ("get", "/health", "Liveness", None, []),
    ("get", "/v1/models", "List running models", None, []),
    ("post", "/v1/models", "Launch a model", "LaunchRequest", []),
    ("get", "/v1/models/{uid}", "Describe a running model", None, ["uid"]),
    ("delete", "/v1/models/{uid}", "Terminate a model", None, ["uid"]),
    ("get", "/v1/models/{uid}/progress", "Launch progress (download fraction)", None, ["uid"]),
    ("post", "/v1/models/{uid}/cancel", "Cancel a launch", None, ["uid"]),
    ("get", "/v1/cache/models", "Downloaded repositories", None, []),
    ("delete", "/v1/cache/models", "Delete a downloaded repository (?model_version=hub/org/name)", None, []),
    ("get", "/v1/cache/models/files", "Where a downloaded repository lies", None, []),
    ("get", "/metrics", "Prometheus metrics", None, []),
    ("get", "/v1/virtualenvs", "Models' virtual environments", None, []),
    ("delete", "/v1/virtualenvs/{name}", "Delete a virtual environment", None, ["name"]),
    ("post", "/v1/models/{uid}/replicas", "Add replicas", None, ["uid"]),
    ("delete", "/v1/models/{uid}/replicas/{replica_id}", "Remove a replica", None, ["uid", "replica_id"]),
    ("post", "/v1/models/{uid}/adapters", "Add a LoRA adapter to a running model", None, ["uid"]),
    ("delete", "/v1/models/{uid}/adapters/{name}", "Remove a LoRA adapter", None, ["uid", "name"]),
    ("post", "/v1/chat/completions", "Chat completion", "ChatRequest", []),
    ("post", "/v1/completions", "Text completion", "CompletionRequest", []),
    ("post", "/v1/embeddings", "Embeddings", "EmbeddingRequest", []),
    ("post", "/v1/messages", "Anthropic Messages API", "MessagesRequest", []),
    ("post", "/v1/messages/count_tokens", "Anthropic token count", "CountTokensRequest", []),
    ("post", "/v1/rerank", "Documents ordered by relevance to a query", "RerankBody", []),
    ("post", "/v1/audio/transcriptions", "Speech to text (multipart/form-data: file, model, ...)", None, []),
    ("post", "/v1/audio/translations", "Speech to English text (multipart/form-data)", None, []),
    ("post", "/v1/audio/speech", "Text to speech (audio bytes)", "SpeechBody", []),
    ("post", "/v1/images/generations", "Text to image", "ImageBody", []),
    ("post", "/v1/images/edits", "Image to image (multipart/form-data: image, prompt, model, ...)", None, []),
    ("post", "/v1/images/variations", "Image to image, as xinference-client's image_to_image sends it", None, []),
    ("get", "/v1/images/files/{name}", "A generated image (PNG)", None, ["name"]),
    ("get", "/v1/engines", "Installed engines", None, []),
    ("get", "/v1/engines/{model_name}", "Engines able to serve a model (Xinference's shape)", None, ["model_name"]),
    ("get", "/v1/engines/{model_type}/{model_name}", "Engine parameters by type", None, ["model_type", "model_name"]),
    ("post", "/v1/convert_ids_to_tokens", "Token ids to the model's tokens", None, []),
    ("get", "/v1/models/instances", "Running models as Xinference's instances", None, []),
    ("get", "/v1/models/vllm-supported", "Families the vLLM engine serves", None, []),
    ("post", "/v1/models/{uid}/requests/{request_id}/abort", "Abort a request", None, ["uid", "request_id"]),
    ("get", "/v1/requests/{request_id}/progress", "A request's progress", None, ["request_id"]),
    ("get", "/v1/autostart/models", "Models launched whenever the server starts", None, []),
    ("get", "/v1/autostart/models/summary", "Autostart entries in short", None, []),
    ("get", "/v1/models/{uid}/reload", "A reload's status", None, ["uid"]),
    ("get", "/v1/models/{uid}/reload/config", "What a reload may change", None, ["uid"]),
    ("get", "/v1/workers", "This server as Xinference's only worker", None, []),
    ("get", "/v1/supervisor", "This server as Xinference's supervisor", None, []),
    ("get", "/v1/address", "This server's address", None, []),
    ("get", "/v1/worker-relaunches", "Worker relaunches (none)", None, []),
    ("get", "/v1/model_registrations/{model_type}", "List model registrations", None, ["model_type"]),
    ("post", "/v1/model_registrations/{model_type}", "Register a model", "RegisterRequest", ["model_type"]),
    ("get", "/v1/model_registrations/{model_type}/{name}", "A registration", None, ["model_type", "name"]),
    ("delete", "/v1/model_registrations/{model_type}/{name}", "Unregister a model", None, ["model_type", "name"]),
    ("get", "/v1/cluster/devices", "Devices and reservations", None, []),
    ("get", "/v1/cluster/auth", "Whether an API key is required", None, []),
]


def document() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(
        [
            ChatRequest,
            CompletionRequest,
            EmbeddingRequest,
            LaunchRequest,
            RegisterRequest,
            MessagesRequest,
            CountTokensRequest,
            RerankBody,
            SpeechBody,
            ImageBody,
        ],
        ref_template="#/components/schemas/{name}",
    )
    components["Error"] = _ERROR
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, params in ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "responses": {
                "200": {"description": "OK", "content": {"text/html" if path == "/" else "application/json": {}}},
                "4XX": {
                    "description": "Client error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        }
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        if body:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            }
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "xinf", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
