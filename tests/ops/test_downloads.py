"""Downloads through the real hub client libraries, against a local fake hub with injected faults."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from xinf.downloads import select
from xinf.errors import LaunchError
from xinf.testing.fakehub import FakeHub
from xinf.testing.server import ServerProcess, free_port
from xinf.testing.wait import wait_for
from xinf.types import ModelSource, ModelSpec

GGUFS = {
    "tiny-Q4_K_M.gguf": os.urandom(300_000),
    "tiny-Q8_0.gguf": os.urandom(500_000),
    "tiny-F16.gguf": os.urandom(900_000),
    "README.md": b"# tiny\n",
}
SNAPSHOT = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "model-00001-of-00002.safetensors": os.urandom(200_000),
    "model-00002-of-00002.safetensors": os.urandom(100_000),
    "pytorch_model.bin": os.urandom(300_000),
    "onnx/model.onnx": os.urandom(50_000),
    "tiny.Q4_K_M.gguf": os.urandom(50_000),
    "1_Pooling/config.json": b"{}",
}


def family(name: str, repo: str, **spec: object) -> dict:
    """A registration whose files live on the hubs; the test engine serves it and reports its path."""
    specs = [
        {
            "format": "test",
            "quantizations": ["Q4_K_M", "Q8_0", "F16"],
            "huggingface": repo,
            "modelscope": repo,
            "csghub": repo,
            **spec,
        }
    ]
    return {"model": {"name": name, "specs": specs, "abilities": ["chat", "generate"]}}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add("org/tiny-gguf", dict(GGUFS))
        fake.add("org/tiny", dict(SNAPSHOT))
        yield fake


def hub_env(hub: FakeHub, **extra: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub.url,
        "MODELSCOPE_ENDPOINT": hub.url,
        "XINFERENCE_CSG_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1",
        **extra,
    }


def register(server: ServerProcess, body: dict) -> None:
    response = server.http.post("/v1/model_registrations/LLM", json=body)
    assert response.status_code == 200, response.text


def model_path(server: ServerProcess, uid: str) -> str:
    with server.openai() as client:
        reply = client.chat.completions.create(
            model=uid, messages=[{"role": "user", "content": "where?"}], max_tokens=1
        )
    return reply.choices[0].message.content  # the test engine's script_path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xinf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xinf.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_only_the_chosen_gguf_file_is_downloaded_and_then_reused(start_server, hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    server.launch(model_name="tiny", quantization="Q4_K_M", script_path=True)
    path = Path(model_path(server, "tiny"))
    assert path == home / "cache" / "huggingface" / "org--tiny-gguf" / "tiny-Q4_K_M.gguf"
    assert sha(path.read_bytes()) == sha(GGUFS["tiny-Q4_K_M.gguf"])
    assert hub.gets("tiny-Q4_K_M.gguf") == [None]
    assert hub.gets("tiny-Q8_0.gguf") == [] and hub.gets("tiny-F16.gguf") == [] and hub.gets("README.md") == []

    # Launching it again reads the cache: the hub is not asked anything.
    server.http.delete("/v1/models/tiny")
    asked = len(hub.requests)
    server.launch(model_name="tiny", quantization="Q4_K_M", script_path=True)
    assert len(hub.requests) == asked
    assert model_path(server, "tiny") == str(path)


def test_a_snapshot_takes_weights_and_configs_only(start_server, hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub))
    register(server, family("tiny-hf", "org/tiny"))
    server.launch(model_name="tiny-hf", quantization="Q4_K_M", script_path=True)
    root = Path(model_path(server, "tiny-hf"))
    assert root == home / "cache" / "huggingface" / "org--tiny"
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert got == [
        "1_Pooling/config.json",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert hub.gets("pytorch_model.bin") == [] and hub.gets("model.onnx") == []


def test_retries_resume_where_the_last_try_stopped(start_server, hub: FakeHub) -> None:
    server: ServerProcess = start_server(env=hub_env(hub, XINFERENCE_DOWNLOAD_MAX_ATTEMPTS="3"))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    # First try: the connection is cut halfway. Second: HTTP 500. Third: succeeds.
    hub.fail("tiny-Q8_0.gguf", "cut", "500")
    server.launch(model_name="tiny", quantization="Q8_0", script_path=True)
    half = len(GGUFS["tiny-Q8_0.gguf"]) // 2
    assert hub.gets("tiny-Q8_0.gguf") == [None, f"bytes={half}-", f"bytes={half}-"]
    assert sha(Path(model_path(server, "tiny")).read_bytes()) == sha(GGUFS["tiny-Q8_0.gguf"])
    log = server.log()
    assert "(attempt 1/3)" in log and "(attempt 2/3)" in log and "HTTP 500" in log


def test_gives_up_after_max_attempts(start_server, hub: FakeHub) -> None:
    server: ServerProcess = start_server(env=hub_env(hub, XINFERENCE_DOWNLOAD_MAX_ATTEMPTS="2"))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    hub.fail("tiny-Q8_0.gguf", "500", "500", "500")
    response = server.http.post("/v1/models", json={"model_name": "tiny", "quantization": "Q8_0"})
    assert response.status_code == 502  # the hub failed, not the client
    error = response.json()["error"]
    assert error["code"] == "hub_unavailable"
    assert error["message"].startswith(
        "could not download tiny-Q8_0.gguf of org/tiny-gguf from huggingface after 2 attempt(s): "
        "tiny-Q8_0.gguf: HTTP 500 from 127.0.0.1. "
    )
    assert "--model-path" in error["message"]
    assert len(hub.gets("tiny-Q8_0.gguf")) == 2


def test_an_unreachable_hub_is_a_502_naming_it_with_a_hint(start_server, hub: FakeHub) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused, as offline
    env = {**hub_env(hub, XINFERENCE_DOWNLOAD_MAX_ATTEMPTS="2"), "HF_ENDPOINT": closed}
    server: ServerProcess = start_server(env=env)
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    response = server.http.post("/v1/models", json={"model_name": "tiny", "quantization": "Q8_0"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "hub_unavailable"
    assert "huggingface" in error["message"] and "--model-path" in error["message"]


def test_a_missing_repository_fails_at_once(start_server, hub: FakeHub) -> None:
    server: ServerProcess = start_server(env=hub_env(hub))
    register(server, family("ghost", "org/ghost", file="ghost-{quantization}.gguf"))
    response = server.http.post("/v1/models", json={"model_name": "ghost", "quantization": "Q4_K_M"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("could not list org/ghost on huggingface: RepositoryNotFoundError")
    assert "attempt" not in message  # a 404 is not retried


def test_modelscope_from_the_environment(start_server, hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub, XINFERENCE_MODEL_SRC="modelscope"))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    hub.fail("tiny-Q4_K_M.gguf", "cut")
    server.launch(model_name="tiny", quantization="Q4_K_M", script_path=True)
    path = Path(model_path(server, "tiny"))
    assert path == home / "cache" / "modelscope" / "org--tiny-gguf" / "tiny-Q4_K_M.gguf"
    assert sha(path.read_bytes()) == sha(GGUFS["tiny-Q4_K_M.gguf"])
    half = len(GGUFS["tiny-Q4_K_M.gguf"]) // 2
    assert hub.gets("tiny-Q4_K_M.gguf") == [None, f"bytes={half}-"]
    assert any(p.startswith("/api/v1/models/org/tiny-gguf/repo/files") for _, p, _ in hub.requests)


def test_csghub_per_launch_with_its_token(start_server, hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub, XINFERENCE_CSG_TOKEN="csg-secret"))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    server.launch(model_name="tiny", quantization="Q4_K_M", download_hub="csghub", script_path=True)
    path = Path(model_path(server, "tiny"))
    assert path == home / "cache" / "csghub" / "org--tiny-gguf" / "tiny-Q4_K_M.gguf"
    csg = [(p, a) for (_, p, _), a in zip(hub.requests, hub.authorization) if p.startswith("/csg/")]
    assert [p for p, _ in csg] == [
        "/csg/api/models/org/tiny-gguf/revision/main",
        "/csg/org/tiny-gguf/resolve/main/tiny-Q4_K_M.gguf",
    ]
    assert all(a == "Bearer csg-secret" for _, a in csg)
    assert "csg-secret" not in server.log()


def test_download_hub_without_that_repository(start_server, hub: FakeHub) -> None:
    server: ServerProcess = start_server(env=hub_env(hub))
    body = family("hf-only", "org/tiny-gguf", file="tiny-{quantization}.gguf")
    del body["model"]["specs"][0]["modelscope"]
    register(server, body)
    response = server.http.post("/v1/models", json={"model_name": "hf-only", "download_hub": "modelscope"})
    assert response.status_code == 400
    assert "has no modelscope repository (it has: huggingface, csghub)" in response.json()["error"]["message"]


def test_progress_cancel_and_resume_with_xinference_client(start_server, hub: FakeHub, tmp_path: Path) -> None:
    from xinference_client import RESTfulClient

    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    big = "tiny-F16.gguf"
    hub.repos["org/tiny-gguf"][big] = data = os.urandom(4 << 20)
    hub.fail(big, "slow:0.05")  # 64 KiB every 50 ms: about 3 s
    client = RESTfulClient(server.url)
    response = server.http.post(
        "/v1/models", params={"wait_ready": "false"}, json={"model_name": "tiny", "quantization": "F16"}
    )
    assert response.status_code == 200

    def midway() -> dict | None:
        info = client.get_launch_model_progress("tiny")
        return info if 0 < info["downloaded_bytes"] < info["total_bytes"] else None

    info = midway() or wait_for(midway)
    assert 0 < info["progress"] < 1 and info["total_bytes"] == len(data) and info["downloading"]
    assert info["hub"] == "huggingface" and info["repository"] == "org/tiny-gguf" and info["file"] == big
    client.cancel_launch_model("tiny")
    wait_for(lambda: server.http.get("/v1/models/tiny").status_code == 404)
    assert "launch of tiny cancelled" in server.log() or "cancelled while downloading" in server.log()

    # The partial file stays; the next launch asks only for the rest.
    cached = client.list_cached_models()
    assert [c["model_version"] for c in cached] == ["huggingface/org/tiny-gguf"]
    assert cached[0]["partial_files"] == [f"{big}.partial"]
    kept = (home / "cache" / "huggingface" / "org--tiny-gguf" / f"{big}.partial").stat().st_size
    assert 0 < kept < len(data)
    server.launch(model_name="tiny", quantization="F16", script_path=True)
    ranges = hub.gets(big)
    assert ranges[0] is None and ranges[-1] is not None and int(ranges[-1][6:-1]) >= kept
    assert sha(Path(model_path(server, "tiny")).read_bytes()) == sha(data)
    assert client.get_launch_model_progress("tiny")["progress"] == 1.0
    server.http.delete("/v1/models/tiny")
    assert client.confirm_and_remove_model("huggingface/org/tiny-gguf") is True
    assert client.list_cached_models() == []


def test_cli_progress_bar_cached_and_remove_cache(start_server, hub: FakeHub, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env=hub_env(hub))
    register(server, family("tiny", "org/tiny-gguf", file="tiny-{quantization}.gguf"))
    hub.repos["org/tiny-gguf"]["tiny-F16.gguf"] = os.urandom(2 << 20)
    hub.fail("tiny-F16.gguf", "slow:0.05")
    done = xinf("launch", "-n", "tiny", "-q", "F16", "-e", server.url)
    assert done.returncode == 0, done.stderr
    assert "downloading org/tiny-gguf from huggingface [" in done.stderr
    assert "100.0% 2.00 MiB / 2.00 MiB" in done.stderr
    assert done.stdout.strip() == "tiny is ready: tiny (test) on test, 1 replica(s)"

    table = xinf("cached", "-e", server.url).stdout.splitlines()
    assert table[0].split() == ["MODEL", "VERSION", "FILES", "STATE", "SIZE", "IN", "USE", "PATH"]
    assert table[1].split()[:5] == ["huggingface/org/tiny-gguf", "1", "complete", "2.00", "MiB"]
    assert table[1].split()[5] == "yes"
    busy = xinf("remove-cache", "huggingface/org/tiny-gguf", "-e", server.url)
    assert busy.returncode == 1 and "in use by a running model" in busy.stderr
    server.http.delete("/v1/models/tiny")
    removed = xinf("remove-cache", "org/tiny-gguf", "-e", server.url)
    assert removed.returncode == 0, removed.stderr
    assert not (home / "cache" / "huggingface" / "org--tiny-gguf").exists()
    assert xinf("cached", "-e", server.url).stdout.strip() == "nothing downloaded"
    listed = json.loads(xinf("cached", "--json", "-e", server.url).stdout)
    assert listed == []


def test_file_selection() -> None:
    def spec(fmt: str, quant: str = "none", file: str | None = None) -> ModelSpec:
        return ModelSpec(name="x", format=fmt, quantization=quant, source=ModelSource(huggingface="o/x", file=file))

    paths = ["a-Q4_K_M.gguf", "a-Q8_0.gguf", "README.md", "config.json"]
    assert select.select(paths, spec("ggufv2", "q8_0")) == ["a-Q8_0.gguf"]
    assert select.select(paths, spec("ggufv2", "Q4_K_M", file="a-Q4_K_M.gguf")) == ["a-Q4_K_M.gguf"]
    with pytest.raises(LaunchError, match="no GGUF file for quantization 'Q2_K'"):
        select.select(paths, spec("ggufv2", "Q2_K"))
    bins = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "tf_model.h5"]
    assert select.select(bins, spec("pytorch")) == bins[:3]
    mlx = ["config.json", "model.safetensors", "tokenizer.model", "original/consolidated.00.pth"]
    assert select.select(mlx, spec("mlx")) == ["config.json", "model.safetensors", "tokenizer.model"]


def test_cache_routes_need_a_model_version(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v1/cache/models/files")
    assert response.status_code == 400 and response.json()["error"]["param"] == "model_version"
    missing = httpx.delete(f"{server.url}/v1/cache/models", params={"model_version": "huggingface/a/b"})
    assert missing.status_code == 404
