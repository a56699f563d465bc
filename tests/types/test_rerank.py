"""POST /v1/rerank against a real `xinf serve`: a tiny cross-encoder of the real architecture (BERT sequence
classifier) through the transformers engine, scores checked against sentence-transformers' CrossEncoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

import tinymodels_rerank

from xinf.testing.server import ServerProcess

QUERY = "where does the cat sleep"
DOCS = [
    "the cat sleeps on the warm mat by the door",
    "stock prices fell sharply on monday",
    "a recipe for bread with flour, water and salt " * 12,  # longer than the model's 64 tokens: truncated
    "dogs like to run in the park",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tinymodels_rerank.ensure()


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> list[float]:
    """sentence-transformers' scores for (QUERY, each of DOCS): the reference implementation."""
    st = pytest.importorskip("sentence_transformers")
    model = st.CrossEncoder(str(model_dir), device="cpu")
    return [float(s) for s in model.predict([(QUERY, d) for d in DOCS])]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServerProcess]:
    """One server; the reranker launched by xinference-client as Xinference users do, with two replicas."""
    from xinference_client import RESTfulClient

    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"))
    server.start()
    try:
        client = RESTfulClient(server.url)
        uid = client.launch_model(
            model_name="tiny-rerank", model_type="rerank", model_path=str(model_dir), model_uid="rr", replica=2
        )
        assert uid == "rr"
        yield server
    finally:
        server.stop()


def test_xinference_client_rerank_equals_cross_encoder(server: ServerProcess, reference: list[float]) -> None:
    from xinference_client import RESTfulClient

    model = RESTfulClient(server.url).get_model("rr")
    out = model.rerank(DOCS, QUERY, return_documents=True, return_len=True)
    results = out["results"]
    assert [r["index"] for r in results] == sorted(range(len(DOCS)), key=lambda i: -reference[i])
    for r in results:
        assert r["relevance_score"] == pytest.approx(reference[r["index"]], abs=1e-4)
        assert r["document"] == {"text": DOCS[r["index"]]}
    tokens = out["meta"]["tokens"]
    assert tokens["input_tokens"] > 0
    assert out["meta"]["truncated"] == [2]
    assert "truncated" in out["meta"]["warnings"][0]


def test_top_n_and_document_objects_as_cohere_and_jina_send_them(server: ServerProcess, reference: list[float]) -> None:
    body = {"model": "rr", "query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 2}
    out = server.http.post("/v1/rerank", json=body).json()
    best = sorted(range(len(DOCS)), key=lambda i: -reference[i])[:2]
    assert [r["index"] for r in out["results"]] == best
    assert all(r["document"] is None for r in out["results"])


def test_dify_style_request_with_httpx(server: ServerProcess, reference: list[float]) -> None:
    """Dify's OpenAI-API-compatible rerank provider: a plain JSON POST, top_n larger than the documents."""
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post(
            "/v1/rerank",
            headers={"Authorization": "Bearer none", "Content-Type": "application/json"},
            json={"model": "rr", "query": QUERY, "documents": DOCS[:2], "top_n": 10, "return_documents": True},
        )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"]["text"] == DOCS[results[0]["index"]]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "rr", "query": QUERY, "documents": []}, 400, "documents"),
        ({"model": "rr", "query": "  ", "documents": DOCS}, 400, "query"),
        ({"model": "rr", "query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n"),
        ({"model": "rr", "documents": DOCS}, 400, None),
        ({"model": "rr", "query": QUERY, "documents": DOCS, "temperature": 1}, 400, "temperature"),
        ({"model": "nope", "query": QUERY, "documents": DOCS}, 404, "model"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(server: ServerProcess, body: dict, status: int, param: str) -> None:
    response = server.http.post("/v1/rerank", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if param:
        assert error["param"] == param


def test_both_replicas_serve_and_metrics_count_them(server: ServerProcess) -> None:
    for _ in range(4):
        assert (
            server.http.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCS}).status_code == 200
        )
    described = server.http.get("/v1/models/rr").json()
    assert described["model_type"] == "rerank" and described["model_ability"] == ["rerank"]
    assert described["model_engine"] == "transformers"
    metrics = server.http.get("/metrics").text
    served = [line for line in metrics.splitlines() if line.startswith('xinf_requests_total{model="rr"')]
    assert len(served) == 2 and all(float(line.split()[-1]) >= 1 for line in served)
    assert any(line.startswith('xinf_prompt_tokens_total{model="rr"') for line in metrics.splitlines())
    documents = [x for x in metrics.splitlines() if x.startswith('xinf_served_units_total{model="rr"')]
    assert documents and 'unit="documents"' in documents[0]
    assert sum(float(x.split()[-1]) for x in documents) >= 4 * len(DOCS)


def test_cli_launch_with_model_type(server: ServerProcess, model_dir: Path) -> None:
    import json
    import subprocess
    import sys

    def xinf(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "xinf.cli.main", "launch", "-e", server.url, "--model-path", str(model_dir), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    plan = xinf("--model-type", "rerank", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["model_engine"] == "transformers"
    wrong = xinf("--model-type", "audio", "--dry-run")
    assert wrong.returncode != 0
    assert "transformers: serves LLM, embedding, rerank models, not audio models" in wrong.stderr
