"""Tool calls: one streaming parser per model output format, and a registry by name.

Families name their format in the catalogue (``tool_call_format``).  Engines
whose library has no parser of its own (transformers, MLX, llama.cpp with a
family-declared format) get their text turned into OpenAI tool-call deltas by
the replica loop (``xinf.replica.child``), after the reasoning split.
"""

from __future__ import annotations

from xinf.toolcalls.base import Parsed, ToolCallParser
from xinf.toolcalls.hermes import HermesParser
from xinf.toolcalls.llama3 import Llama3JsonParser
from xinf.toolcalls.mistral import MistralParser

PARSERS: dict[str, type[ToolCallParser]] = {
    HermesParser.name: HermesParser,
    Llama3JsonParser.name: Llama3JsonParser,
    MistralParser.name: MistralParser,
}
#: the parser for the output of constrained decoding: a bare JSON call object
FORCED = Llama3JsonParser.name


def get_parser(name: str) -> ToolCallParser:
    """A fresh parser for one response; KeyError names the known formats."""
    try:
        return PARSERS[name]()
    except KeyError:
        raise KeyError(f"unknown tool call format {name!r}; known: {', '.join(sorted(PARSERS))}") from None


__all__ = ["FORCED", "PARSERS", "Parsed", "ToolCallParser", "get_parser"]
