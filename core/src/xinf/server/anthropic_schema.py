"""The Anthropic Messages API's request body, and its translation into a ``GenerateRequest``.

Anthropic content blocks become the OpenAI-shaped messages the engines and
chat templates already take: ``tool_use`` blocks are assistant ``tool_calls``,
``tool_result`` blocks are ``tool`` messages, ``thinking`` blocks are
``reasoning_content``, images are ``image_url`` parts with a ``data:`` URL.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from xinf.errors import InvalidRequest
from xinf.types import GenerateRequest


class AnthropicMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/messages``; ``max_tokens`` is required, as Anthropic requires it."""

    model: str
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1, le=1 << 31)]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(max_length=16)] | None = None
    stream: bool = False
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


class CountTokensRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/messages/count_tokens``: the parts of a request that make the prompt."""

    model: str
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


def _text_of(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    parts = []
    for block in blocks or []:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise InvalidRequest(f"{where} may only hold text blocks", param=where)
        parts.append(str(block.get("text", "")))
    return "".join(parts)


def openai_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"tools.{i} needs a name", param=f"tools.{i}.name")
        if tool.get("type") not in (None, "custom"):
            raise InvalidRequest(
                f"tools.{i}: server tools ({tool.get('type')}) are not available here; give client tools",
                param=f"tools.{i}.type",
            )
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def openai_tool_choice(choice: dict[str, Any] | None) -> tuple[Any, bool | None]:
    """OpenAI's ``tool_choice`` and ``parallel_tool_calls`` for Anthropic's ``tool_choice``."""
    if choice is None:
        return None, None
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise InvalidRequest('tool_choice.type must be "auto", "any", "tool" (with a name) or "none"', param="tool_choice")


def openai_messages(system: Any, messages: list[AnthropicMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _text_of(system, "system")})
    for n, message in enumerate(messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        texts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        thoughts: list[str] = []
        for i, block in enumerate(message.content):
            where = f"messages.{n}.content.{i}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append({"type": "text", "text": str(block.get("text", ""))})
            elif kind == "image" and message.role == "user":
                texts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
            elif kind == "tool_use" and message.role == "assistant":
                arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
                calls.append(
                    {
                        "id": str(block.get("id", "")),
                        "type": "function",
                        "function": {"name": str(block.get("name", "")), "arguments": arguments},
                    }
                )
            elif kind == "tool_result" and message.role == "user":
                content = block.get("content", "")
                text = _text_of(content, f"{where}.content") if content else ""
                if block.get("is_error"):
                    text = f"Error: {text}"
                out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
            elif kind in ("thinking", "redacted_thinking") and message.role == "assistant":
                thoughts.append(str(block.get("thinking", "")))
            else:
                raise InvalidRequest(f"{where}: a {message.role} message cannot hold a {kind!r} block", param=where)
        if not texts and not calls and not thoughts:
            continue  # a user turn of tool results only
        entry: dict[str, Any] = {"role": message.role}
        if all(p["type"] == "text" for p in texts):
            entry["content"] = "".join(p["text"] for p in texts) if texts or not calls else None
        else:
            entry["content"] = texts
        if calls:
            entry["tool_calls"] = calls
        if thoughts:
            entry["reasoning_content"] = "".join(thoughts)
        out.append(entry)
    return out


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    raise InvalidRequest(f"{where}: an image source must be base64 or url", param=f"{where}.source")


def thinking_flag(thinking: dict[str, Any] | None) -> bool | None:
    if thinking is None:
        return None
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise InvalidRequest('thinking.type must be "enabled" or "disabled"', param="thinking.type")
    return bool(kind != "disabled")


def generate_request(req: MessagesRequest | CountTokensRequest, max_tokens: int) -> GenerateRequest:
    """The request as the engines take it (before the model's own checks)."""
    tool_choice, parallel = openai_tool_choice(req.tool_choice)
    tools = openai_tools(req.tools)
    if tool_choice == "none":
        tools, tool_choice = None, None
    kwargs: dict[str, Any] = {}
    thinking = thinking_flag(req.thinking)
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    sampling: dict[str, Any] = {}
    if isinstance(req, MessagesRequest):
        sampling = {"temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k}
        sampling["stop"] = list(req.stop_sequences or [])
    return GenerateRequest(
        messages=openai_messages(req.system, req.messages),
        max_tokens=max_tokens,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=parallel,
        chat_template_kwargs=kwargs,
        **sampling,
    )
