"""OpenAI embeddings: ``POST /v1/embeddings``.

``input`` is text, token ids, or a list of either (LangChain's OpenAI client
sends token ids by default).  ``dimensions`` shortens vectors only for models
trained for it (``matryoshka`` in the catalogue); others answer 400.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf.errors import InvalidRequest
from xinf.schemas import EmbeddingRequest
from xinf.server.http import decode, json_response, read_body
from xinf.server.state import state
from xinf.server.streams import until_disconnect
from xinf.types import EmbedRequest

MAX_INPUTS = 2048


def inputs_of(value: Any) -> tuple[list[str], list[list[int]] | None]:
    """Texts, or token-id lists (never a mix: engines embed one kind per request)."""
    if isinstance(value, str):
        value = [value]
    if value and all(_is_id(v) for v in value):
        return [], [list(value)]
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request", param="input")
    if all(isinstance(v, str) for v in value):
        if any(not text for text in value):
            raise InvalidRequest("input must not contain empty strings", param="input")
        return list(value), None
    if all(isinstance(v, list) and v and all(_is_id(t) for t in v) for v in value):
        return [], [list(v) for v in value]
    raise InvalidRequest(
        "input must be a string, a list of strings, a list of token ids or a list of token-id lists", param="input"
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def embeddings(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), EmbeddingRequest)
    model = st.manager.get(req.model)
    if "embed" not in model.spec.abilities:
        raise InvalidRequest(f"model {model.uid!r} is not an embedding model", param="model")
    if req.dimensions is not None and not model.spec.matryoshka:
        raise InvalidRequest(
            f"model {model.uid!r} does not make shortened vectors: leave dimensions out "
            '(register the model with "matryoshka": true if it was trained for them)',
            param="dimensions",
        )
    texts, ids = inputs_of(req.input)
    embed = EmbedRequest(input=texts, input_ids=ids, dimensions=req.dimensions)
    result = await until_disconnect(request, model.embed(embed))
    data = []
    for i, vector in enumerate(result.embeddings):
        value: Any = vector
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )
