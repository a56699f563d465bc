"""Continuous batching through transformers' own ``ContinuousBatchingManager``.

The manager (transformers >= 5) runs one background thread over a paged KV
cache: a request added between two steps joins the next step, a finished or
cancelled one leaves the batch and frees its cache blocks at once.  We use it
as is and add only what it lacks for serving:

- slots: the manager queues without bound and its ``max_requests_per_batch``
  caps one step, not the requests holding cache, so an asyncio semaphore of
  ``max_num_seqs`` slots admits requests and a finished, stopped or
  disconnected request gives its slot back immediately;
- greedy and sampled requests in one batch: the manager samples every row or
  none (``do_sample`` is global), so it always samples and a greedy request
  asks for ``top_k=1``, which leaves the arg-max as the only candidate;
- stop strings: the manager stops on token ids only; the engine matches strings
  on the text and cancels the request in the manager;
- per-request seeds: the manager has one random generator for the whole batch
  (seeded by the ``seed`` launch option), so a request's ``seed`` cannot make
  its own sampling repeatable here.  Launch with ``--max_num_seqs 1`` (one at a
  time) when seeds must reproduce; greedy output is deterministic either way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from xinf.errors import EngineError, InvalidRequest
from xinf_transformers.text import Job

log = logging.getLogger(__name__)
PAGE_SIZE = 64  # tokens per KV block: small pages waste little memory on short chats


class BatchRunner:
    """Feeds jobs to one ``ContinuousBatchingManager`` and streams their tokens back."""

    def __init__(
        self,
        model: Any,
        *,
        max_num_seqs: int,
        cache_tokens: int,
        max_batch_tokens: int,
        seed: int | None,
        share_prefixes: bool = True,
    ):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        vocab = int(model.config.get_text_config().vocab_size)
        self.vocab = vocab
        self.max_num_seqs = max_num_seqs
        # Values other than the neutral ones make the manager build the per-request
        # temperature, top-k and top-p processors; every request sets its own values.
        generation = GenerationConfig(
            do_sample=True, temperature=0.5, top_k=vocab // 2, top_p=0.5, eos_token_id=-1, max_new_tokens=16
        )
        batching = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            num_blocks=max(2, -(-cache_tokens // PAGE_SIZE)),
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=max_num_seqs,
            per_request_processors=True,
            seed=seed,
            # A cached prefix holds the keys and values of the adapter that computed it: with LoRA adapters
            # a request must never reuse another request's blocks.
            allow_block_sharing=share_prefixes,
        )
        self.manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=batching)
        if model.device.type == "cpu":
            from xinf_transformers.sampling import speed_up

            speed_up(self.manager)  # no full sort of the vocabulary per row and step (same tokens)
        self.manager.start()
        self.ids = itertools.count()
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        # Created on first use so that it binds to the replica's running loop.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_num_seqs)
        return self._slots

    def check(self, job: Job) -> None:
        """Refuse what the shared batch cannot do, before the stream starts."""
        if job.min_p is not None or job.repetition_penalty is not None:
            raise InvalidRequest(
                "min_p and repetition_penalty need the model to itself: launch it with --max_num_seqs 1",
                param="min_p" if job.min_p is not None else "repetition_penalty",
            )

    async def tokens(self, job: Job) -> AsyncIterator[list[int]]:
        """New token ids of ``job`` step by step; closing the iterator cancels it in the manager."""
        self.check(job)
        manager = self.manager
        async with self.slots:
            rid = f"xinf-{next(self.ids)}"
            outputs: asyncio.Queue[Any] = asyncio.Queue()
            manager.register_result_handler(rid, outputs.put_nowait)
            if job.greedy:
                sampling = {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
            else:
                top_k = job.top_k if 0 < job.top_k < self.vocab else self.vocab
                sampling = {"temperature": job.temperature, "top_k": top_k, "top_p": job.top_p}
            added = manager.add_request(
                job.prompt_ids,
                request_id=rid,
                max_new_tokens=job.max_new_tokens,
                streaming=True,
                eos_token_id=-1 if job.ignore_eos or not job.eos_ids else job.eos_ids,
                **sampling,
            )
            if added is None:
                self._forget(rid)
                raise EngineError("the batching loop is not accepting requests (it stopped or failed)")
            seen = 0
            finished = False
            try:
                while True:
                    try:
                        output = await asyncio.wait_for(outputs.get(), 5.0)
                    except asyncio.TimeoutError:
                        if not manager.is_running():
                            raise EngineError("the batching loop stopped") from None
                        continue
                    if output.error is not None:
                        finished = True
                        raise EngineError(f"generation failed: {output.error}")
                    new = list(output.generated_tokens[seen:])
                    seen += len(new)
                    if new:
                        yield new
                    if output.is_finished():
                        finished = True
                        return
            finally:
                if not finished:
                    # The client went away or a stop string matched: the manager drops
                    # the request at its next step and frees its cache blocks.
                    manager.cancel_request(rid)
                self._forget(rid)

    def _forget(self, rid: str) -> None:
        # A cancelled request never gets a final output, so its handler would stay
        # registered; the manager has no public call to remove one.
        router = self.manager.output_router
        with router._lock:
            router.result_handlers.pop(rid, None)

    def close(self) -> None:
        try:
            self.manager.stop(block=True, timeout=10, hard_stop=True)
        finally:
            self.manager.destroy()
