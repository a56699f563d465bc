"""What a request's ``tools`` and ``tool_choice`` ask for, checked as OpenAI checks them.

``required`` and a named function force a call.  Engines that can constrain
decoding give the model ``forced_schema``: a JSON object naming one of the
allowed functions with arguments valid for its parameters, which the
``FORCED`` parser then reads back as a call.
"""

from __future__ import annotations

import re
from typing import Any

from xinf.errors import InvalidRequest

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CHOICES = ("none", "auto", "required")


def check_tools(tools: list[dict[str, Any]] | None, tool_choice: Any, model: str, abilities: list[str]) -> None:
    """400 for tools a model cannot use and for malformed tools or tool_choice."""
    if tool_choice is not None and not tools:
        if tool_choice in ("none", "auto"):
            return
        raise InvalidRequest("tool_choice needs tools: give the functions the model may call", param="tool_choice")
    if not tools:
        return
    if "tools" not in abilities:
        raise InvalidRequest(
            f"model {model!r} does not support tools (tool calls); its abilities are: {', '.join(abilities)}",
            param="tools",
            code="unsupported_parameter",
        )
    names = set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}}', param=f"tools[{i}]"
            )
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(
                f"tools[{i}].function.name must be 1 to 64 letters, digits, '_', '-', '.' or ':'",
                param=f"tools[{i}].function.name",
            )
        if name in names:
            raise InvalidRequest(f"two tools are named {name!r}", param=f"tools[{i}].function.name")
        names.add(name)
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"tools[{i}].function.parameters must be a JSON schema object", param=f"tools[{i}].function.parameters"
            )
    if tool_choice is None or tool_choice in CHOICES:
        return
    named = forced_name(tool_choice)
    if named is None:
        raise InvalidRequest(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if named not in names:
        raise InvalidRequest(f"tool_choice names {named!r}, which is not among the tools", param="tool_choice")


def forced_name(tool_choice: Any) -> str | None:
    """The function a named ``tool_choice`` forces, else None."""
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        function = tool_choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def is_forced(tool_choice: Any) -> bool:
    """Whether the model must call a tool (``required`` or a named function)."""
    return tool_choice == "required" or forced_name(tool_choice) is not None


def allowed_tools(tools: list[dict[str, Any]], tool_choice: Any) -> list[dict[str, Any]]:
    """The tools a forced call may use: the named one, or all of them."""
    name = forced_name(tool_choice)
    if name is None:
        return tools
    return [t for t in tools if t["function"]["name"] == name]


def forced_schema(tools: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any]:
    """JSON schema of one call to one of the allowed functions."""
    options = []
    for tool in allowed_tools(tools, tool_choice):
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}
