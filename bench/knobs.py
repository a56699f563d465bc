"""What both sides of a comparison share, light enough for the launch baseline's fresh interpreter.

``Settings`` and the request mix, importing nothing but ``dataclasses``: the
baseline child (``bench.first_token``) must pay for the interpreter and the
engine, not for the benchmark's own harness (asyncio, the HTTP client side).
``bench.common`` re-exports both.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Settings:
    """The knobs both sides of a comparison share."""

    #: tools/tinymodels.py preset: tiny (~3M parameters, a smoke run) or 100m (~99M)
    size: str = "100m"
    #: output tokens per request (end-of-sequence ignored, so every request writes exactly this many)
    tokens: int = 64
    #: engine CPU threads on both sides (llama.cpp threads, torch threads, vLLM's OpenMP threads)
    threads: int = 1
    #: requests decoded together: llama.cpp n_parallel, transformers and vLLM max_num_seqs
    max_seqs: int = 16
    #: tokens one request may span (prompt + output)
    context: int = 1024

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def messages(i: int) -> list[dict[str, str]]:
    """Request ``i``'s chat: a different opening per request, so no engine serves it from a prefix cache."""
    return [{"role": "user", "content": f"Story {i}: tell me a long story about a lighthouse keeper and the sea."}]
