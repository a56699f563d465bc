"""Bounded requests: what one request may ask for, checked before any engine sees it.

Every limit is a 400 naming the parameter and the limit (with its variable),
never a hang or a 500:

- ``n`` (``XINF_MAX_N``) and choices per request, ``n`` x prompts (``XINF_MAX_CHOICES``);
- messages per chat request (``XINF_MAX_MESSAGES``);
- JSON nesting depth of the free-form fields (``tools``, ``response_format``,
  ``chat_template_kwargs``, content parts, ``tool_calls``; ``XINF_MAX_JSON_DEPTH``);
- structured output: a schema (``response_format``, each tool's ``parameters``)
  of at most ``XINF_MAX_SCHEMA_BYTES`` bytes and ``XINF_MAX_SCHEMA_ENUM`` enum
  values in all, ``pattern`` s of at most ``MAX_PATTERN`` characters without
  nested quantifiers (a catastrophic regex compiles into a grammar that never ends).

Engines compile schemas into grammars in the replica (llama.cpp does it on the
thread that serves the request); the bounds keep that compile short, and the
progress watchdog (``xinf.watchdog``) restarts a replica that freezes anyway.

The shape of messages and tools is checked here too, so that engine parsers
never meet a non-string text part or a tool without a name (they answered 500).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from xinf.errors import InvalidRequest
from xinf.settings import Settings

MAX_PATTERN = 256
MAX_TOOLS = 128
MEDIA_PARTS = {"image_url": "vision", "input_audio": "audio", "video_url": "video", "audio_url": "audio"}
TEXT_PARTS = ("text", "input_text")
# A group that repeats and holds a repeat: (a+)+, (a*)*, (\w+\s?)*, (a|aa)+ ...
_NESTED = re.compile(r"\((?:[^()]*[+*}])[^()]*\)\s*[+*{]|\((?:[^()]*\|[^()]*)\)\s*[+*{]")
_encode = msgspec.json.Encoder().encode


def depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value`` (lists and dicts), walked without recursion; stops past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_depth(value: Any, param: str, settings: Settings) -> None:
    limit = settings.max_json_depth
    if value is not None and depth(value, limit) > limit:
        raise InvalidRequest(
            f"{param} is nested deeper than this server's limit of {limit} levels (XINF_MAX_JSON_DEPTH)",
            param=param,
            code="too_deep",
        )


def check_choices(n: int, prompts: int, settings: Settings) -> None:
    if n > settings.max_n:
        raise InvalidRequest(f"n={n} is over this server's limit of {settings.max_n} (XINF_MAX_N)", param="n")
    if n * prompts > settings.max_choices:
        raise InvalidRequest(
            f"{prompts} prompt(s) x n={n} asks for {n * prompts} choices, over this server's limit of "
            f"{settings.max_choices} per request (XINF_MAX_CHOICES)",
            param="n",
        )


def check_schema(schema: Any, param: str, settings: Settings) -> None:
    """Size, enum values and patterns of a JSON schema (or a whole response_format)."""
    if schema is None:
        return
    check_depth(schema, param, settings)
    size = len(_encode(schema))
    if size > settings.max_schema_bytes:
        raise InvalidRequest(
            f"{param} is {size} bytes of JSON schema, over this server's limit of {settings.max_schema_bytes} "
            "(XINF_MAX_SCHEMA_BYTES)",
            param=param,
            code="schema_too_large",
        )
    values = 0
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        enum = item.get("enum")
        if isinstance(enum, list):
            values += len(enum)
        pattern = item.get("pattern")
        if isinstance(pattern, str):
            _check_pattern(pattern, param)
        stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
    if values > settings.max_schema_enum:
        raise InvalidRequest(
            f"{param} has {values} enum values, over this server's limit of {settings.max_schema_enum} "
            "(XINF_MAX_SCHEMA_ENUM)",
            param=param,
            code="schema_too_large",
        )


def _check_pattern(pattern: str, param: str) -> None:
    if len(pattern) > MAX_PATTERN:
        raise InvalidRequest(
            f"a pattern in {param} has {len(pattern)} characters, over the limit of {MAX_PATTERN}", param=param
        )
    if _NESTED.search(pattern):
        raise InvalidRequest(
            f"the pattern {pattern[:80]!r} in {param} repeats a repeated group (catastrophic backtracking); "
            "rewrite it without nested quantifiers",
            param=param,
        )


def check_chat(req: Any, abilities: list[str], uid: str, settings: Settings) -> None:
    """Every bound and shape rule of a chat request (``xinf.schemas.ChatRequest``)."""
    check_choices(req.n, 1, settings)
    if len(req.messages) > settings.max_messages:
        raise InvalidRequest(
            f"{len(req.messages)} messages is over this server's limit of {settings.max_messages} (XINF_MAX_MESSAGES)",
            param="messages",
        )
    check_depth(req.chat_template_kwargs, "chat_template_kwargs", settings)
    check_schema(req.response_format, "response_format", settings)
    check_tools(req.tools, settings)
    check_tool_choice(req.tool_choice)
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            check_parts(message.content, f"messages[{i}].content", abilities, uid, settings)
        if message.tool_calls is not None:
            check_tool_calls(message.tool_calls, f"messages[{i}].tool_calls", settings)


def check_parts(parts: list[Any], param: str, abilities: list[str], uid: str, settings: Settings) -> None:
    check_depth(parts, param, settings)
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"{where} must be an object with a string 'type'", param=where)
        kind = part["type"]
        if kind in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
        elif kind in MEDIA_PARTS:
            ability = MEDIA_PARTS[kind]
            if ability not in abilities:
                raise InvalidRequest(f"model {uid} has no {ability} ability; remove the {kind} part", param=where)
        else:
            known = ", ".join((*TEXT_PARTS, *MEDIA_PARTS))
            raise InvalidRequest(f"{where}: unknown content part type {kind!r} (known: {known})", param=where)


def check_tools(tools: list[Any] | None, settings: Settings) -> None:
    if tools is None:
        return
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"{len(tools)} tools is over the limit of {MAX_TOOLS}", param="tools")
    check_depth(tools, "tools", settings)
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequest(f"{where} must be {{'type': 'function', 'function': {{...}}}}", param=where)
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"{where}.function.name must be a non-empty string", param=f"{where}.function.name")
        if "description" in function and not isinstance(function["description"], (str, type(None))):
            raise InvalidRequest(f"{where}.function.description must be a string", param=f"{where}.function")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"{where}.function.parameters must be a JSON schema object", param=f"{where}.function.parameters"
            )
        check_schema(parameters, f"{where}.function.parameters", settings)


def check_tool_choice(choice: Any) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return
    raise InvalidRequest(
        "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
        param="tool_choice",
    )


def check_tool_calls(calls: list[Any], param: str, settings: Settings) -> None:
    check_depth(calls, param, settings)
    for k, call in enumerate(calls):
        where = f"{param}[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{where} must have function.name (a string)", param=where)
        if not isinstance(function.get("arguments", ""), str):
            raise InvalidRequest(f"{where}.function.arguments must be a JSON string", param=f"{where}.function")
        if "id" in call and not isinstance(call["id"], str):
            raise InvalidRequest(f"{where}.id must be a string", param=f"{where}.id")
