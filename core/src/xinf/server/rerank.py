"""``POST /v1/rerank``: documents ordered by relevance to a query (Xinference's, Cohere's and Jina's shape)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf.errors import InvalidRequest
from xinf.operations import RerankRequest, RerankResult
from xinf.schemas_rerank import RerankBody, text
from xinf.server.http import decode, json_response, read_body
from xinf.server.state import state
from xinf.server.streams import until_disconnect
from xinf.server.types import model_for


async def rerank(request: Request) -> Response:
    st = state(request)
    body = decode(await read_body(request, st.max_body), RerankBody)
    model = model_for(st, body.model, "rerank")
    query = text(body.query)
    if not query.strip():
        raise InvalidRequest("query must not be empty", param="query")
    documents = [text(d) for d in body.documents]
    result: RerankResult = await until_disconnect(request, model.serve(RerankRequest(query=query, documents=documents)))
    if len(result.scores) != len(documents):
        raise InvalidRequest(f"the engine scored {len(result.scores)} of {len(documents)} documents")
    order = sorted(range(len(documents)), key=lambda i: result.scores[i], reverse=True)
    if body.top_n is not None:
        order = order[: body.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": result.scores[i], "document": None}
        if body.return_documents:
            item["document"] = {"text": documents[i]}
        results.append(item)
    tokens = result.prompt_tokens
    warnings = None
    if result.truncated:
        listed = ", ".join(str(i) for i in result.truncated)
        warnings = [f"documents {listed} were truncated to the model's maximum length"]
    return json_response(
        {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {
                "api_version": None,
                "billed_units": None,
                "tokens": {"input_tokens": tokens, "output_tokens": tokens},
                "warnings": warnings,
                "truncated": result.truncated,
            },
        }
    )
