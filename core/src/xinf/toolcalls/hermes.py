"""Hermes / Qwen format: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call.

Used by Qwen2.5, Qwen3, Hermes 2/3, SmolLM3 and others.  A block may also hold
a JSON array of calls (SmolLM2's instruct data writes them so).
"""

from __future__ import annotations

from typing import Any

from xinf.toolcalls.base import CallsReader
from xinf.toolcalls.tagged import TaggedParser


class HermesParser(TaggedParser):
    """``<tool_call>`` blocks; text outside them is content."""

    name = "hermes"
    start_tag = "<tool_call>"
    end_tag = "</tool_call>"
    tags = ("<tool_call>", "</tool_call>")

    def reader_for_section(self) -> Any:
        return CallsReader(self.emitter)
