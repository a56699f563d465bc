"""Sentence embeddings the way sentence-transformers computes them, and micro-batching.

The model directory's ``modules.json`` lists the pipeline: the transformer,
then a pooling module (``1_Pooling/config.json`` says mean, CLS, max or
mean-sqrt-len) and optionally ``Normalize``.  We run the same steps with plain
transformers rather than depending on the sentence-transformers package.

Concurrent requests are gathered into one forward pass: the first request of a
batch waits ``XINFERENCE_BATCH_INTERVAL`` seconds for others, and a batch is
sent at once when it reaches ``XINFERENCE_BATCH_SIZE`` texts.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xinf.errors import InvalidRequest
from xinf.types import EmbedRequest, EmbedResult


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Pipeline:
    """Pooling mode, normalization and maximum length read from the model directory."""

    def __init__(self, root: Path):
        modules = _read_json(root / "modules.json") or []
        types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
        self.normalize = "Normalize" in types
        pooling: dict[str, Any] = {}
        if "Pooling" in types:
            pooling = _read_json(root / str(types["Pooling"].get("path", "1_Pooling")) / "config.json") or {}
        if pooling.get("pooling_mode_cls_token"):
            self.mode = "cls"
        elif pooling.get("pooling_mode_max_tokens"):
            self.mode = "max"
        elif pooling.get("pooling_mode_mean_sqrt_len_tokens"):
            self.mode = "mean_sqrt_len"
        elif pooling.get("pooling_mode_lasttoken"):
            self.mode = "last"
        else:
            self.mode = "mean"
        bert = _read_json(root / "sentence_bert_config.json") or {}
        self.max_length: int | None = bert.get("max_seq_length")


class EmbeddingModel:
    """A loaded embedding model with its micro-batcher."""

    def __init__(self, model: Any, tokenizer: Any, pipeline: Pipeline, batch_size: int, batch_interval: float):
        self.model = model
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-embed")
        self.pending: list[tuple[list[str], asyncio.Future[Any]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.batches = 0  # forward passes run, for the log and the bench

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    # ------------------------------------------------------------ batching

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        dims = request.dimensions
        if dims is not None and not 0 < dims <= self.dimensions:
            raise InvalidRequest(f"dimensions must be between 1 and {self.dimensions}", param="dimensions")
        loop = asyncio.get_running_loop()
        if request.input_ids:  # token ids: one forward pass of their own, outside the text batches
            vectors, counts = await loop.run_in_executor(self.pool, self.encode_ids, request.input_ids)
            if dims is not None and dims < self.dimensions:
                vectors = [_unit(v[:dims]) for v in vectors]
            return EmbedResult(embeddings=vectors, prompt_tokens=sum(counts))
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((list(request.input), future))
        if sum(len(texts) for texts, _ in self.pending) >= self.batch_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.batch_interval, self._flush)
        vectors, tokens = await future
        if dims is not None and dims < self.dimensions:
            vectors = [_unit(v[:dims]) for v in vectors]
        return EmbedResult(embeddings=vectors, prompt_tokens=tokens)

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        texts = [t for group, _ in batch for t in group]
        loop = asyncio.get_running_loop()
        try:
            vectors: list[list[float]] = []
            counts: list[int] = []
            for start in range(0, len(texts), self.batch_size):
                v, c = await loop.run_in_executor(self.pool, self.encode, texts[start : start + self.batch_size])
                vectors += v
                counts += c
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        pos = 0
        for group, future in batch:
            n = len(group)
            if not future.done():  # the client may have gone away
                future.set_result((vectors[pos : pos + n], sum(counts[pos : pos + n])))
            pos += n

    # ------------------------------------------------------------ the model

    def encode(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        """Vectors and token counts of ``texts`` in one forward pass."""
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.pipeline.max_length, return_tensors="pt"
        )
        return self.forward(enc)

    def encode_ids(self, ids: list[list[int]]) -> tuple[list[list[float]], list[int]]:
        """Vectors of token-id inputs, as given (the client tokenized them, special tokens included or not)."""
        size = len(self.tokenizer)
        bad = sorted({i for row in ids for i in row if i >= size})
        if bad:
            raise InvalidRequest(f"token ids {bad[:5]} are not in the vocabulary (0 to {size - 1})", param="input")
        limit = self.pipeline.max_length
        enc = self.tokenizer.pad({"input_ids": [row[:limit] for row in ids]}, padding=True, return_tensors="pt")
        return self.forward(enc)

    def forward(self, enc: Any) -> tuple[list[list[float]], list[int]]:
        import torch

        self.batches += 1
        enc = enc.to(self.model.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mode = self.pipeline.mode
        if mode == "cls":
            pooled = hidden[:, 0]
        elif mode == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        elif mode == "last":
            last = enc["attention_mask"].sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        else:
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
        if self.pipeline.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.tolist(), enc["attention_mask"].sum(dim=1).tolist()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _unit(vector: list[float]) -> list[float]:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]
