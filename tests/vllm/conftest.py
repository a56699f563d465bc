"""tests/vllm run in .venv-vllm (built by scripts/venv-vllm); elsewhere they are skipped.

vLLM and torch warn at import and engine start (deprecations inside their own
code); the project turns warnings into errors, so these tests let theirs pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm_testing import ENV, HAS_PLUGIN, HAS_VLLM, LONG, OPTIONS, SKIP_REASON, UID, tiny_model

from xinf.testing.server import ServerProcess

HERE = Path(__file__).parent

if not HAS_PLUGIN:
    # The test modules import xinf_vllm: without it they cannot even be collected.  test_environment
    # imports nothing of it and shows the skip, with its reason, in the main suite's summary.
    collect_ignore = [p.name for p in HERE.glob("test_*.py") if p.name != "test_environment.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            for category in ("DeprecationWarning", "FutureWarning", "UserWarning", "ResourceWarning"):
                item.add_marker(pytest.mark.filterwarnings(f"ignore::{category}"))


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if HAS_PLUGIN and HAS_VLLM else f"tests/vllm skipped: {SKIP_REASON}"


# One xinf serve with the tiny model on vLLM for test_server.py and test_server_openai.py (vLLM starts slowly).
@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("vllm-home"), env=ENV) as server:
        yield server


@pytest.fixture(scope="package")
def launched(server: ServerProcess) -> dict[str, Any]:
    """``xinf launch ... --model-engine vllm`` through the real CLI; extra --name value pairs are vLLM options."""
    # 1024 tokens: room for a Qwen3 tools preamble (~200 tokens a tool with the tiny tokenizer) and a call
    options = [f"--{k}={json.dumps(v)}" for k, v in {**OPTIONS, "max_model_len": LONG}.items()]
    command = [sys.executable, "-m", "xinf.cli.main", "launch", "-e", server.url, "-n", "qwen3"]
    command += ["--model-path", str(tiny_model()), "-u", UID, "--model-engine", "vllm", *options]
    command += ["--enable_log_requests", "true"]  # the replica log then records every abort
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    info = server.http.get(f"/v1/models/{UID}").json()
    assert info["model_engine"] == "vllm" and info["status"] == "ready"
    return dict(info)
