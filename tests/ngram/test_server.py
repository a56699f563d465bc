"""The example plugin served for real, as docs/plugins.md's "Serve it" and "Debugging" sections show it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.testing.server import ServerProcess

plugin = pytest.importorskip("xinf_ngram.plugin", reason="pip install -e examples/xinf-ngram")
CORPUS = str(plugin.corpus_path())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("xinf-home"), env={"XINF_TRACE_PLUGINS": "1"}) as server:
        yield server


def xinf(server: ServerProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args, "-e", server.url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_listed_launched_and_chatting(server: ServerProcess) -> None:
    assert any(line.split()[:1] == ["ngram"] and line.endswith("ok") for line in xinf(server, "engines").splitlines())
    xinf(server, "launch", "--model-path", CORPUS, "--model-format", "ngram", "-u", "sea")
    reply = server.http.post(
        "/v1/chat/completions",
        json={"model": "sea", "messages": [{"role": "user", "content": "Tell me about the harbour."}], "seed": 1},
    )
    assert reply.status_code == 200
    body = reply.json()
    words = body["choices"][0]["message"]["content"].split()
    assert words and all(w in Path(CORPUS).read_text().split() for w in words)  # every word comes from the corpus
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] == 5 and body["usage"]["completion_tokens"] == len(words)


def test_registered_embedding_model(server: ServerProcess, tmp_path: Path) -> None:
    family = {
        "name": "sea-embed",
        "model_type": "embedding",
        "abilities": ["embed"],
        "specs": [{"format": "ngram", "quantizations": ["none"]}],
    }
    (tmp_path / "sea-embed.json").write_text(json.dumps(family))
    xinf(server, "register", "--file", str(tmp_path / "sea-embed.json"), "-t", "embedding")
    xinf(server, "launch", "-n", "sea-embed", "--model-path", CORPUS)
    reply = server.http.post("/v1/embeddings", json={"model": "sea-embed", "input": ["The sea is calm.", "Goats."]})
    assert reply.status_code == 200
    data = reply.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 64


def test_bad_option_fails_the_launch_naming_it(server: ServerProcess) -> None:
    reply = server.http.post(
        "/v1/models", json={"model_path": CORPUS, "model_format": "ngram", "model_uid": "bad", "ordr": 3}
    )
    assert reply.status_code == 400
    assert "ordr" in reply.json()["error"]["message"]


def test_the_trace_shows_each_hook_where_it_runs(server: ServerProcess) -> None:
    """XINF_TRACE_PLUGINS=1: the server's log has the server-side hooks, the replica's log the others."""
    server_log = server.log_path.read_text()
    assert "ngram.match_model(spec=ModelSpec(name='sea'" in server_log
    assert "ngram.estimate_vram(spec=ModelSpec(name='sea'" in server_log
    replica_log = Path(server.http.get("/v1/models/sea").json()["replicas"][0]["log"]).read_text()
    assert "ngram.load(spec=ModelSpec(name='sea'" in replica_log
    assert "ngram.load -> <xinf_ngram.engine.NgramModel object" in replica_log
    assert "ngram.generate(model=<xinf_ngram.engine.NgramModel object" in replica_log
    assert " chunks, finish_reason=" in replica_log
    embed_log = Path(server.http.get("/v1/models/sea-embed").json()["replicas"][0]["log"]).read_text()
    assert "ngram.embed -> EmbedResult(" in embed_log
