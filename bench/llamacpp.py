"""llama.cpp through ``xllamacpp``, set up the way the xinf-llamacpp plugin sets it up.

The model is the generated GGUF of the chosen size (``tools/tinymodels.py``,
``gguf-<size>``: llama architecture, F16, the same tokenizer as the
Hugging Face models).  xllamacpp is imported inside the functions only, and
so is the harness (asyncio, ``bench.common``): ``first_token`` runs in the
launch baseline's fresh interpreter (``bench.first_token``), which should pay
for the engine alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.knobs import Settings, messages

NAME = "llamacpp"
LIBRARY = "xllamacpp"
LABEL = "llama.cpp"


def model(settings: Settings) -> Path:
    from bench.common import tinymodels

    return Path(tinymodels().ensure(f"gguf-{settings.size}"))


def describe(settings: Settings) -> str:
    return f"gguf-{settings.size} (F16)"


def launch_body(path: Path, settings: Settings) -> dict[str, Any]:
    return {
        "model_path": str(path),
        "model_engine": "llama.cpp",
        "n_parallel": settings.max_seqs,
        "n_ctx": settings.max_seqs * settings.context,
        "n_threads": settings.threads,
    }


def params(path: Path, settings: Settings) -> Any:
    """``CommonParams`` as the plugin builds them from ``launch_body``'s options."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_ctx = settings.max_seqs * settings.context
    p.n_parallel = settings.max_seqs
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = settings.threads
    p.reasoning_format = xlc.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
    p.warmup = False  # the plugin skips llama.cpp's warm-up run on a CPU replica
    p.verbosity = 0
    return p


def body(i: int, settings: Settings) -> dict[str, Any]:
    return {
        "messages": messages(i),
        "max_tokens": settings.tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


class Direct:
    """An ``xllamacpp.Server`` in this process; each request blocks a thread, as in the plugin."""

    def __init__(self, path: Path, settings: Settings):
        from concurrent.futures import ThreadPoolExecutor

        import xllamacpp as xlc

        self.server = xlc.Server(params(path, settings))
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=4 * settings.max_seqs, thread_name_prefix="direct")

    def _request(self, i: int) -> tuple[int, float]:
        start = time.perf_counter()
        first: list[float] = []
        usage: list[int] = []

        def callback(chunk: Any) -> bool:
            for item in chunk if isinstance(chunk, list) else [chunk]:
                for choice in item.get("choices") or []:
                    if not first and (choice.get("delta") or {}).get("content"):
                        first.append(time.perf_counter() - start)
                if item.get("usage"):
                    usage.append(int(item["usage"]["completion_tokens"]))
            return False

        self.server.handle_chat_completions(body(i, self.settings), callback)
        return usage[-1], first[0]

    async def one(self, i: int) -> tuple[int, float]:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self.pool, self._request, i)

    async def close(self) -> None:
        self.pool.shutdown()
        self.server = None  # xllamacpp's server stops when collected


async def direct(path: Path, settings: Settings) -> Direct:
    return Direct(path, settings)


def first_token(path: Path, settings: Settings) -> None:
    """Load the model and stream one chat request until its first token (the launch baseline)."""
    import xllamacpp as xlc

    server = xlc.Server(params(path, settings))
    done = threading.Event()

    def callback(chunk: Any) -> bool:
        for item in chunk if isinstance(chunk, list) else [chunk]:
            if any((c.get("delta") or {}).get("content") for c in item.get("choices") or []):
                done.set()
        return done.is_set()

    server.handle_chat_completions(body(0, settings), callback)
    assert done.is_set(), "llama.cpp wrote no token"


def own_server(path: Path, settings: Settings, port: int) -> None:
    """llama.cpp's own HTTP server (the one xllamacpp's ``Server`` runs), until SIGTERM."""
    import signal

    import xllamacpp as xlc

    p = params(path, settings)
    p.port = port
    p.hostnames = ["127.0.0.1"]
    server = xlc.Server(p)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"llama.cpp serving on {server.listening_address}", flush=True)
    stop.wait()
