"""One request at a time through plain ``model.generate()``.

Used when batching is off (``max_num_seqs`` 1 or
``XINFERENCE_TRANSFORMERS_ENABLE_BATCHING=0``).  Everything ``generate()``
offers works here, per-request seeds included: requests run one after the
other on a single worker thread, so seeding the global generator is safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xinf_transformers.text import Job

_END = object()


class SerialRunner:
    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xinf-generate")

    def check(self, job: Job) -> None:
        pass

    async def tokens(self, job: Job, processors: list[Any] | None = None) -> AsyncIterator[list[int]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        future = loop.run_in_executor(self.pool, self._run, job, loop, queue, cancelled, processors or [])
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item
            await future  # re-raises what generate() raised
        finally:
            # Checked by generate() before every step: the worker moves on to the next request.
            cancelled.set()

    def _run(
        self,
        job: Job,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
        cancelled: Any,
        processors: list[Any],
    ) -> None:
        import torch
        from transformers import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() hands over the prompt first
                    self.prompt_seen = True
                    return
                loop.call_soon_threadsafe(queue.put_nowait, [int(t) for t in value.reshape(-1).tolist()])

            def end(self) -> None:
                pass

        try:
            if cancelled.is_set():
                return
            if job.seed is not None:
                torch.manual_seed(job.seed)
            ids = torch.tensor([job.prompt_ids], device=self.model.device)
            kwargs: dict[str, Any] = {
                "max_new_tokens": job.max_new_tokens,
                "do_sample": not job.greedy,
                "eos_token_id": job.eos_ids or None,
                "pad_token_id": self.pad_id,
            }
            if job.ignore_eos:
                kwargs["min_new_tokens"] = job.max_new_tokens
            if not job.greedy:
                kwargs.update(temperature=job.temperature, top_p=job.top_p, top_k=job.top_k or None)
                if job.min_p is not None:
                    kwargs["min_p"] = job.min_p
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if job.repetition_penalty is not None:
                kwargs["repetition_penalty"] = job.repetition_penalty
            with torch.inference_mode():
                self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=Streamer(),
                    stopping_criteria=[Cancelled()],
                    logits_processor=processors or None,
                    **(job.inputs or {}),
                    **kwargs,
                )
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
