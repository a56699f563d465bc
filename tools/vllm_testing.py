"""What tests/vllm share: whether vLLM is here, the tiny model, and the options that keep it small."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

HAS_PLUGIN = importlib.util.find_spec("xinf_vllm") is not None
HAS_VLLM = importlib.util.find_spec("vllm") is not None
SKIP_REASON = "needs vLLM and xinf-vllm: scripts/venv-vllm builds .venv-vllm, where scripts/test runs tests/vllm"

#: the tiny model's uid in the server tests/vllm/conftest.py shares between modules
UID = "tiny-qwen3"
#: the shared server's max_model_len
LONG = 1024
# Small and quick on two shared cores: a short context, eager mode (no torch.compile at start).
OPTIONS: dict[str, Any] = {"max_model_len": 512, "max_num_seqs": 4, "enforce_eager": True}
# One OpenMP thread, not pinned: colleagues' test runs share the two cores.
ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}


def tiny_model() -> Path:
    """A Qwen3-shaped random model with a template that honours enable_thinking (tools/tinymodels.py)."""
    import tinymodels

    return tinymodels.ensure("qwen3-tiny")
