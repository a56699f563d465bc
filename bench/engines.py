"""The engines the benchmarks compare, and the interpreter each one runs in.

Each engine is a module of this package (``bench.llamacpp``, ``bench.transformers``,
``bench.vllm``) with the same functions: ``model``, ``describe``, ``launch_body``,
``direct`` (the engine called in-process), ``first_token`` (load and write one
token, for the launch baseline) and ``own_server`` (the engine's own HTTP server,
for the load tool).  An engine's measurements run in a child process started with
the interpreter that has the engine (vLLM pins its own torch: .venv-vllm), so one
command covers every engine and no engine's memory outlives its turn.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import REPO, Settings, quiet_env, say

ENGINES = ("llamacpp", "transformers", "vllm")


def module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


@dataclasses.dataclass(frozen=True)
class Interpreters:
    """Which Python runs which engine: the current one, except where the engine lives in a venv of its own."""

    vllm: str = str(REPO / ".venv-vllm" / "bin" / "python")

    def python(self, engine: str) -> str:
        if engine == "vllm" and Path(self.vllm).exists():
            return self.vllm
        return sys.executable

    def installed(self, engines: list[str]) -> list[str]:
        """Those of ``engines`` that can run here; says why each other one is skipped."""
        out = []
        for engine in engines:
            why = self.missing(engine)
            if why:
                say(f"skipping {engine}: {why}")
            else:
                out.append(engine)
        return out

    def missing(self, engine: str) -> str | None:
        """Why ``engine`` cannot run here, or None."""
        python = self.python(engine)
        library = module(engine).LIBRARY
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u, sys; sys.exit(u.find_spec({library!r}) is None)"],
            cwd=REPO,
        )
        if found.returncode == 0:
            return None
        hint = " (build it with ./scripts/venv-vllm)" if engine == "vllm" else ""
        return f"{library} is not installed in {python}{hint}"


def settings_args(settings: Settings) -> list[str]:
    args = []
    for key, value in settings.to_json().items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **quiet_env(settings.threads), "PYTHONUNBUFFERED": "1"}


def run_child(python: str, section: str, engine: str, settings: Settings, extra: list[str]) -> dict[str, Any]:
    """``python -m bench _child SECTION ENGINE ...`` and the JSON it writes."""
    with tempfile.TemporaryDirectory(prefix="xinf-bench-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [python, "-m", "bench", "_child", section, engine, "--out", str(out), *settings_args(settings), *extra]
        proc = subprocess.run(argv, cwd=REPO, env=child_env(settings))
        if proc.returncode != 0 or not out.exists():
            return {"error": f"{section} for {engine} failed (exit {proc.returncode}); its output is above"}
        return json.loads(out.read_text())  # type: ignore[no-any-return]


class Child:
    """A helper process of ours (the launch baseline, an engine's own server), stopped with all it started."""

    def __init__(self, argv: list[str], env: dict[str, str], stdout: Any = None, stderr: Any = None):
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything it left in its session (vLLM's engine core process)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def first_token_seconds(engine: str, settings: Settings) -> float:
    """Seconds from starting a fresh interpreter to the engine's first token (the raw engine's launch)."""
    # The model is found here: building its path needs numpy and tokenizers, which no launch imports.
    path = module(engine).model(settings)
    argv = [sys.executable, "-m", "bench.first_token", engine, str(path), json.dumps(settings.to_json())]
    start = time.monotonic()
    child = Child(argv, child_env(settings), stdout=subprocess.PIPE)
    try:
        assert child.proc.stdout is not None
        for line in child.proc.stdout:  # engines log to stdout too (vLLM does)
            if line.startswith(b"first token"):
                return time.monotonic() - start
        raise RuntimeError(f"the {engine} baseline ended without a token (exit {child.proc.wait()})")
    finally:
        child.stop(grace=1.0)


def own_server(engine: str, settings: Settings, port: int, python: str, log: Path) -> Child:
    """The engine's own OpenAI server on 127.0.0.1:``port``, its output in ``log``."""
    argv = [python, "-m", "bench", "_own-server", engine, "--port", str(port), *settings_args(settings)]
    argv += ["--model-path", str(module(engine).model(settings))]
    with open(log, "ab") as out:
        return Child(argv, child_env(settings), stdout=out, stderr=subprocess.STDOUT)
