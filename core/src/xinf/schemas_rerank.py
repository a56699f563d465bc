"""``POST /v1/rerank`` bodies: Xinference's shape, which Cohere and Jina clients send too."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

MAX_DOCUMENTS = 4096


class Document(msgspec.Struct, kw_only=True):
    """A document given as an object (Cohere, Jina): its ``text`` is what is ranked."""

    text: str


class RerankBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    query: str | Document
    documents: Annotated[list[str | Document], Meta(min_length=1, max_length=MAX_DOCUMENTS)]
    top_n: Annotated[int, Meta(ge=1)] | None = None
    return_documents: bool | None = None
    return_len: bool | None = None
    # Sent by xinference-client, Cohere and Jina clients; accepted, not used.
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = None
    rank_fields: list[str] | None = None
    kwargs: str | dict[str, Any] | None = None
    user: str | None = None


def text(value: str | Document) -> str:
    return value if isinstance(value, str) else value.text
