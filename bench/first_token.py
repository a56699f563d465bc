"""The launch baseline: ``python -m bench.first_token ENGINE MODEL_PATH SETTINGS_JSON``.

A fresh interpreter that loads the model with the engine alone and streams one
request until its first token, then prints ``first token`` (the parent times
it from the process start: ``bench.engines.first_token_seconds``).  It imports
only the engine's module of this package, not the harness of ``python -m
bench`` (argparse, asyncio, the HTTP client side: 0.05-0.1 s here that the
engine alone would not pay, and the xinf side of the comparison does not).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from bench.knobs import Settings


def main(argv: list[str]) -> None:
    engine, path, settings = argv
    importlib.import_module(f"bench.{engine}").first_token(Path(path), Settings(**json.loads(settings)))
    print("first token", flush=True)
    os._exit(0)  # the parent timed it; tearing the engine down is not part of the figure


if __name__ == "__main__":  # vLLM spawns processes that import __main__ again: keep the guard
    main(sys.argv[1:])
