"""LLM-style rerankers (Qwen3-Reranker) through the transformers engine: a tiny random Qwen3 causal LM of the real
architecture, scores checked against P("yes") computed directly with transformers by the model card's recipe, and
served by a real `xinf serve` on /v1/rerank."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

import tinymodels_rerank

from xinf.testing.server import ServerProcess

QUERY = "where does the cat sleep"
DOCS = [
    "the cat sleeps on the warm mat by the door",
    "stock prices fell sharply on monday",
    "a recipe for bread with flour, water and salt " * 12,  # past the model's 256 tokens: cut at its end
    "dogs like to run in the park",
]
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the "
    'answer can only be "yes" or "no".'
)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tinymodels_rerank.ensure_qwen3()


def reference(model_dir: Path, query: str, docs: list[str], instruction: str = INSTRUCTION) -> list[float]:
    """The model card's recipe, one pair at a time (no padding): P(yes) over {yes, no} at the last position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prefix = tokenizer.encode(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n", add_special_tokens=False)
    suffix = tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    room = tinymodels_rerank.QWEN3_CONTEXT - len(prefix) - len(suffix)
    scores = []
    for doc in docs:
        body = tokenizer.encode(
            f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}", add_special_tokens=False
        )[:room]
        with torch.no_grad():
            logits = model(torch.tensor([prefix + body + suffix])).logits[0, -1]
        pair = torch.log_softmax(torch.stack([logits[no], logits[yes]]), dim=0)
        scores.append(float(pair[1].exp()))
    return scores


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServerProcess]:
    """One server with the reranker launched as a user would, by path and type."""
    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"), env={"XINFERENCE_BATCH_SIZE": "3"})
    server.start()
    try:
        server.launch(model_name="tiny-qwen3-rerank", model_type="rerank", model_path=str(model_dir), model_uid="q3")
        yield server
    finally:
        server.stop()


def test_scores_equal_the_model_card_recipe(server: ServerProcess, model_dir: Path) -> None:
    expected = reference(model_dir, QUERY, DOCS)
    assert max(expected) - min(expected) > 1e-3  # the documents score differently: the check can fail
    out = server.http.post(
        "/v1/rerank", json={"model": "q3", "query": QUERY, "documents": DOCS, "return_documents": True}
    )
    assert out.status_code == 200, out.text
    body = out.json()
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCS)), key=lambda i: -expected[i])
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-4)
        assert r["document"] == {"text": DOCS[r["index"]]}
    assert body["meta"]["truncated"] == [2]
    assert body["meta"]["tokens"]["input_tokens"] > 0


def test_instruction_option_changes_the_prompt(model_dir: Path) -> None:
    """The launch option reaches the prompt (in-process: the engine's own loader, no second server replica)."""
    from xinf.operations import RerankRequest
    from xinf.settings import Settings
    from xinf_transformers import llmrerank, options

    law = "Given a legal question, retrieve the statutes that answer it"
    expected = reference(model_dir, QUERY, DOCS[:2], instruction=law)
    assert expected != pytest.approx(reference(model_dir, QUERY, DOCS[:2]), abs=1e-4)
    opts = options.parse({"rerank_instruction": law})
    import torch

    model = llmrerank.load(str(model_dir), "qwen3", torch.float32, "cpu", opts, Settings.from_env())
    try:
        got = model.score(RerankRequest(query=QUERY, documents=DOCS[:2])).scores
    finally:
        model.close()
    assert got == pytest.approx(expected, abs=1e-4)


def test_xinference_client_rerank(server: ServerProcess, model_dir: Path) -> None:
    from xinference_client import RESTfulClient

    expected = reference(model_dir, QUERY, DOCS[:2])
    out = RESTfulClient(server.url).get_model("q3").rerank(DOCS[:2], QUERY, top_n=1)
    assert len(out["results"]) == 1
    best = max(range(2), key=lambda i: expected[i])
    assert out["results"][0]["index"] == best
    assert out["results"][0]["relevance_score"] == pytest.approx(expected[best], abs=1e-4)


def test_other_causal_lms_are_refused_with_the_reason(tmp_path: Path) -> None:
    """Only Qwen3-Reranker's format is known: a Llama causal LM launched as a reranker fails naming what is served."""
    import torch

    from xinf.errors import LaunchError
    from xinf.settings import Settings
    from xinf_transformers import options, plugin

    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    with pytest.raises(LaunchError, match="Qwen3-Reranker's format"):
        plugin._load_rerank(str(tmp_path), torch.float32, "cpu", options.parse({}), Settings.from_env())
