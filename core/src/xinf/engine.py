"""The old name of ``xinf.types``, kept so that engine plugins written against it still import.

New code imports ``xinf.types``: a plugin's own ``engine.py`` holds an engine; this module never did.
"""

from xinf.types import (
    ABILITIES,
    FORMATS,
    Chunk,
    Device,
    EmbedRequest,
    EmbedResult,
    EngineMatch,
    GenerateRequest,
    Hardware,
    LoraAdapter,
    MemoryEstimate,
    ModelSource,
    ModelSpec,
    Node,
    Placement,
    TokenLogprob,
    Usage,
)

__all__ = [
    "ABILITIES",
    "FORMATS",
    "Chunk",
    "Device",
    "EmbedRequest",
    "EmbedResult",
    "EngineMatch",
    "GenerateRequest",
    "Hardware",
    "LoraAdapter",
    "MemoryEstimate",
    "ModelSource",
    "ModelSpec",
    "Node",
    "Placement",
    "TokenLogprob",
    "Usage",
]
