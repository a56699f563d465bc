"""Cross-encoder rerankers (bge-reranker, jina-reranker, ms-marco MiniLM): scores as sentence-transformers computes them.

``CrossEncoder.predict`` tokenizes each (query, document) pair together,
truncating the longest side first to the tokenizer's maximum length, runs the
sequence-classification head and applies the model's activation: the one its
``config.json`` names under ``sentence_transformers.activation_fn``, else a
sigmoid for single-label models.  We do the same with plain transformers, in
batches of ``XINFERENCE_BATCH_SIZE`` pairs sorted by length (less padding).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xinf.operations import RerankRequest, RerankResult

#: activations a model's config may name (sentence-transformers writes the class's dotted path)
_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Tanh": "tanh", "Softmax": "softmax"}


def max_length(tokenizer: Any, config: Any) -> int:
    """The longest pair the model takes: the tokenizer's limit, never past the position embeddings."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # their position ids start after the padding index
    if limit <= 0 or limit > 1_000_000:
        limit = positions or 512
    return min(limit, positions) if positions > 0 else limit


def activation(config: Any) -> str:
    named = (getattr(config, "sentence_transformers", None) or {}).get("activation_fn") or getattr(
        config, "sbert_ce_default_activation_function", None
    )
    if named:
        return _ACTIVATIONS.get(str(named).rsplit(".", 1)[-1], "identity")
    return "sigmoid" if int(getattr(config, "num_labels", 1)) == 1 else "identity"


class RerankModel:
    """A loaded sequence-classification model scoring (query, document) pairs."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.max_length = max_length(tokenizer, model.config)
        self.activation = activation(model.config)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-rerank")
        self.batches = 0  # forward passes run, for the bench
        self.threads: int | None = None  # torch's intra-op threads, reported to the server

    async def rerank(self, request: RerankRequest) -> RerankResult:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.score, request)

    def score(self, request: RerankRequest) -> RerankResult:
        docs = request.documents
        # Full lengths first (no padding, no tensors: cheap with a fast tokenizer) to sort and to report truncation.
        full = self.tokenizer([request.query] * len(docs), docs, truncation=False, verbose=False)["input_ids"]
        lengths = [len(ids) for ids in full]
        order = sorted(range(len(docs)), key=lambda i: -lengths[i])
        scores = [0.0] * len(docs)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, value in zip(batch, self.forward(request.query, [docs[i] for i in batch])):
                scores[i] = value
        return RerankResult(
            scores=scores,
            tokens=[min(n, self.max_length) for n in lengths],
            truncated=[i for i, n in enumerate(lengths) if n > self.max_length],
        )

    def forward(self, query: str, docs: list[str]) -> list[float]:
        import torch

        self.batches += 1
        enc = self.tokenizer(
            [query] * len(docs),
            docs,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.model.device)
        with torch.inference_mode():
            logits = self.model(**enc).logits.float()
        if self.activation == "softmax" or logits.shape[-1] > 1:
            scores = torch.softmax(logits, dim=-1)[:, -1]  # two-label heads: the "relevant" label's probability
        else:
            scores = logits[:, 0]
            if self.activation == "sigmoid":
                scores = torch.sigmoid(scores)
            elif self.activation == "tanh":
                scores = torch.tanh(scores)
        return [float(s) for s in scores.tolist()]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
