"""The content parts of chat messages: checked once for every chat route (OpenAI and Anthropic)."""

from __future__ import annotations

from typing import Any

from xinf.errors import InvalidRequest
from xinf.model import RunningModel

TEXT = "text"
IMAGE = "image_url"


def check_parts(messages: list[dict[str, Any]], model: RunningModel) -> None:
    """400 for parts the model cannot take: images without the ``vision`` ability, unknown part types."""
    for n, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"messages[{n}].content[{i}]"
            if kind == TEXT:
                if not isinstance(part.get("text"), str):
                    raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
            elif kind == IMAGE:
                if "vision" not in model.spec.abilities:
                    raise InvalidRequest(
                        f"model {model.uid!r} has no vision ability: it cannot take images", param=where
                    )
            else:
                raise InvalidRequest(f"{where}: content parts of type {kind!r} are not supported", param=f"{where}.type")
