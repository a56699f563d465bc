"""Turning an engine's chunks into content and tool-call deltas, in the replica loop."""

from __future__ import annotations

from typing import Any

from xinf.toolcalls import FORCED, get_parser, known
from xinf.toolcalls.base import ToolCallParser
from xinf.toolcalls.choice import is_forced
from xinf.types import Chunk, GenerateRequest, ModelSpec


class ToolCallStream:
    """Parses one choice's text; the finish becomes ``tool_calls`` when the model called a tool.

    With ``parallel_tool_calls`` false only the first call is kept.
    """

    def __init__(self, parser: ToolCallParser, *, parallel: bool = True, forced: bool = False):
        self.parser = parser
        self.parallel = parallel
        #: the engine constrains the output to one JSON call: no thoughts, no text
        self.forced = forced

    @classmethod
    def for_request(cls, spec: ModelSpec | None, request: GenerateRequest, constrained: Any) -> ToolCallStream | None:
        """The stream for a request, or None when the core has nothing to parse."""
        fmt = known(spec.tool_parser) if spec is not None else None
        if fmt is None or not request.is_chat or not request.tools:
            return None
        if request.tool_choice == "none":
            return None
        forced = bool(constrained) and is_forced(request.tool_choice)
        return cls(
            get_parser(FORCED if forced else fmt), parallel=request.parallel_tool_calls is not False, forced=forced
        )

    def apply(self, chunk: Chunk) -> None:
        """Rewrite ``chunk`` in place: its text through the parser, its finish reason."""
        out = self.parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            tail = self.parser.flush()
            out.content += tail.content
            out.calls += tail.calls
        chunk.text = out.content
        calls = [c for c in out.calls if self.parallel or c["index"] == 0]
        if calls:
            chunk.tool_calls = [*(chunk.tool_calls or []), *calls]
        if chunk.finish_reason == "stop" and self.parser.called:
            chunk.finish_reason = "tool_calls"
