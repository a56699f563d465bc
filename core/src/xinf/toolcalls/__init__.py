"""Tool calls: one streaming parser per model output format, and a registry by name.

Families name their format in the catalogue (``tool_parser``, with Xinference's
names: ``qwen`` is the Hermes form, ``llama3`` the Llama 3 JSON form).  Engines
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
#: Xinference's ``tool_parser`` names for the formats above
ALIASES = {"qwen": HermesParser.name, "llama3": Llama3JsonParser.name}
#: the parser for the output of constrained decoding: a bare JSON call object
FORCED = Llama3JsonParser.name


def known(name: str | None) -> str | None:
    """The parser a family's ``tool_parser`` names, or None when xinf has none for it."""
    if name is None:
        return None
    name = ALIASES.get(name, name)
    return name if name in PARSERS else None


def get_parser(name: str) -> ToolCallParser:
    """A fresh parser for one response; KeyError names the known formats."""
    try:
        return PARSERS[ALIASES.get(name, name)]()
    except KeyError:
        raise KeyError(f"unknown tool call format {name!r}; known: {', '.join(sorted(PARSERS))}") from None


__all__ = ["ALIASES", "FORCED", "PARSERS", "Parsed", "ToolCallParser", "get_parser", "known"]
