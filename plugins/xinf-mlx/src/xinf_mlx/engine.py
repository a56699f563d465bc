"""mlx-lm inside the replica: one engine thread, continuous batching, async streams out.

mlx-lm's generation is synchronous, so a dedicated thread owns the model and an
mlx-lm ``BatchGenerator`` (its continuous-batching engine, the one
``mlx_lm.server`` uses).  Requests reach the thread through a command queue:
a new one joins the running batch at the next step, a closed stream is removed
from it at the next step.  Tokens go back to each request's asyncio queue on the
event loop it came from.  The model is loaded in that same thread because mlx
streams belong to the thread that made them.

Per-request sampling is built from mlx-lm's own sampler pieces; a request with
a ``seed`` samples from its own PRNG key, so it is reproducible while it shares
the batch with others (mlx-lm's server instead serves seeded requests one at a
time).  Stop strings are matched on the text (``xinf.stops``) because a string
can end inside a token; end-of-sequence tokens stop the sequence in the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import load as mlx_load
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, greedy_sampler, make_logits_processors

from xinf.errors import EngineError, InvalidRequest, LaunchError
from xinf.prompts import encode_prompt, output_room
from xinf.stops import StopMatcher
from xinf.types import Chunk, GenerateRequest, ModelSpec, TokenLogprob, Usage
from xinf_mlx.memory import default_context, read_config
from xinf_mlx.options import MLXOptions

log = logging.getLogger("xinf.mlx")
Sampler = Callable[[mx.array], mx.array]


def make_request_sampler(temperature: float, top_p: float, top_k: int, min_p: float, seed: int | None) -> Sampler:
    """mlx-lm's sampler chain (top-p, min-p, top-k, then temperature), with its own key when seeded."""
    if temperature <= 0:
        return greedy_sampler  # one shared object: mlx-lm samples the whole batch in one call
    filters: list[Callable[[mx.array], mx.array]] = []
    if 0 < top_p < 1:
        filters.append(lambda x: apply_top_p(x, top_p))
    if min_p > 0:
        filters.append(lambda x: apply_min_p(x, min_p))
    if top_k > 0:
        filters.append(lambda x: apply_top_k(x, top_k))
    key = mx.random.key(seed) if seed is not None else None

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        for f in filters:
            logprobs = f(logprobs)
        sub = None
        if key is not None:
            key, sub = mx.random.split(key)
        return mx.random.categorical(logprobs * (1 / temperature), key=sub)

    return sample


@dataclass
class Step:
    """One token of one request, as the engine thread hands it over."""

    token: int
    finish: str | None
    logprob: TokenLogprob | None = None


class IncrementalDecoder:
    """Token ids in, text deltas out, decoding a short window as vLLM does.

    Decoding ``tokens[prefix:]`` against ``tokens[prefix:read]`` keeps the context
    a tokenizer needs for leading spaces (unlike mlx-lm's streaming detokenizer,
    which drops the first token's space: wrong for completions) and holds back
    incomplete UTF-8 sequences until they are whole.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def feed(self, token: int) -> str:
        self.tokens.append(token)
        before = self._decode(self.tokens[self.prefix : self.read])
        after = self._decode(self.tokens[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.tokens)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self.tokens[self.prefix : self.read])
        after = self._decode(self.tokens[self.prefix :])
        self.prefix = self.read = len(self.tokens)
        return after[len(before) :]


@dataclass(eq=False)
class Job:
    prompt: list[int]
    max_tokens: int
    sampler: Sampler
    processors: list[Any]
    stop: StopSequences
    logprobs: int | None
    loop: asyncio.AbstractEventLoop
    steps: asyncio.Queue[Step | BaseException] = field(default_factory=asyncio.Queue)
    uid: int | None = None

    def deliver(self, item: Step | BaseException) -> bool:
        """Hand ``item`` to the request's event loop; False when that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self.steps.put_nowait, item)
            return True
        except RuntimeError:  # the loop was closed: nobody is listening
            return False


def _hand_over(steps: list[tuple[Job, Step]]) -> None:
    for job, step in steps:
        job.steps.put_nowait(step)


class Engine(threading.Thread):
    """The thread that owns the mlx model and its batch."""

    def __init__(self, path: str, opts: MLXOptions):
        super().__init__(name="xinf-mlx-engine", daemon=True)
        self.path = path
        self.opts = opts
        self.commands: queue.SimpleQueue[tuple[str, Job | None]] = queue.SimpleQueue()
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.config: dict[str, Any] = {}

    # ------------------------------------------------------------ called from other threads

    def submit(self, job: Job) -> None:
        if not self.is_alive():
            raise EngineError("the mlx engine thread is not running (see the replica log)")
        self.commands.put(("add", job))

    def cancel(self, job: Job) -> None:
        self.commands.put(("cancel", job))

    def stop(self, timeout: float = 30.0) -> None:
        self.commands.put(("stop", None))
        self.join(timeout)

    # ------------------------------------------------------------ the thread

    def run(self) -> None:
        try:
            started = time.monotonic()
            self.stream = mx.default_stream(mx.default_device())
            self.model, self.tokenizer, self.config = mlx_load(
                self.path,
                tokenizer_config={"trust_remote_code": self.opts.trust_remote_code},
                return_config=True,
                trust_remote_code=self.opts.trust_remote_code,
            )
            batch = self._new_batch()
            log.info("loaded %s on %s in %.1fs", self.path, mx.default_device(), time.monotonic() - started)
        except BaseException as exc:
            self.load_error = exc
            self.loaded.set()
            return
        self.loaded.set()
        jobs: dict[int, Job] = {}
        try:
            self._serve(batch, jobs)
        except BaseException as exc:
            log.exception("the mlx engine thread failed")
            # Nobody will step these again: fail them rather than leave their clients waiting.
            waiting = list(jobs.values())
            while True:
                try:
                    command, job = self.commands.get_nowait()
                except queue.Empty:
                    break
                if command == "add" and job is not None:
                    waiting.append(job)
            for job in waiting:
                job.deliver(EngineError(f"the mlx engine failed: {type(exc).__name__}: {exc}"))
        finally:
            batch.close()

    def _new_batch(self) -> BatchGenerator:
        return BatchGenerator(
            self.model,
            completion_batch_size=self.opts.max_num_seqs,
            prefill_batch_size=min(self.opts.max_num_seqs, 8),
            prefill_step_size=self.opts.prefill_step_size,
            max_kv_size=self.opts.max_kv_size,
            stream=self.stream,
        )

    def _serve(self, batch: BatchGenerator, jobs: dict[int, Job]) -> None:
        while True:
            # Block only when idle; otherwise take what has arrived and step the batch.
            commands = [self.commands.get()] if not jobs else []
            while True:
                try:
                    commands.append(self.commands.get_nowait())
                except queue.Empty:
                    break
            for command, job in commands:
                if command == "stop":
                    for job in jobs.values():
                        job.deliver(EngineError("the model is being unloaded"))
                    return
                assert job is not None
                if command == "add":
                    self._add(batch, jobs, job)
                elif job.uid is not None and jobs.pop(job.uid, None) is not None:
                    batch.remove([job.uid])  # a closed stream leaves the batch before the next token
            if not jobs:
                continue
            try:
                _, responses = batch.next()
            except Exception as exc:
                log.exception("mlx-lm batch step failed")
                for job in jobs.values():
                    job.deliver(exc)
                jobs.clear()
                batch.close()
                batch = self._new_batch()
                continue
            # One wake-up per event loop per step, not one per token: the loop thread shares the cores.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Step]]] = {}
            for r in responses:
                job = jobs.get(r.uid)
                if job is None:
                    continue
                if r.finish_reason is not None:
                    del jobs[r.uid]
                by_loop.setdefault(job.loop, []).append((job, self._step(job, r)))
            for loop, steps in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_hand_over, steps)
                except RuntimeError:  # that loop was closed: nobody is listening to its requests
                    gone = [job.uid for job, _ in steps if job.uid in jobs]
                    for uid in gone:
                        del jobs[uid]
                    if gone:
                        batch.remove(gone)

    def _add(self, batch: BatchGenerator, jobs: dict[int, Job], job: Job) -> None:
        try:
            (uid,) = batch.insert(
                [job.prompt],
                max_tokens=[job.max_tokens],
                samplers=[job.sampler],
                logits_processors=[job.processors],
                stop_sequences=[job.stop],
            )
        except Exception as exc:
            job.deliver(exc)
            return
        job.uid = uid
        jobs[uid] = job

    def _step(self, job: Job, r: Any) -> Step:
        step = Step(token=r.token, finish=r.finish_reason)
        if job.logprobs is not None and r.finish_reason != "stop":
            step.logprob = self._logprob(r.logprobs, r.token, job.logprobs)
        return step

    def _logprob(self, logprobs: mx.array, token: int, top: int) -> TokenLogprob:
        alternatives: list[tuple[str, float]] = []
        if top > 0:
            ids = mx.argpartition(-logprobs, kth=top - 1)[:top]
            pairs = sorted(zip(ids.tolist(), logprobs[ids].tolist()), key=lambda p: -p[1])
            alternatives = [(self.tokenizer.decode([i]), float(v)) for i, v in pairs]
        return TokenLogprob(
            token=self.tokenizer.decode([token]), logprob=float(logprobs[token].item()), top_logprobs=alternatives
        )


class MLXModel:
    """A loaded model: the engine thread plus what requests need to be prepared."""

    def __init__(self, spec: ModelSpec, opts: MLXOptions, engine: Engine, defaults: dict[str, Any]):
        self.spec = spec
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.context = opts.context_length or spec.context_length or default_context(engine.config)
        self.context_length = self.context  # what one request may use (reported to the server)
        self.defaults = defaults
        self.eos_stop = StopSequences([(t,) for t in sorted(self.tokenizer.eos_token_ids)])
        self.no_stop = StopSequences(None)

    @classmethod
    def load(cls, spec: ModelSpec, opts: MLXOptions) -> MLXModel:
        path = spec.source.path
        if not path or not Path(path).is_dir():
            # mlx-lm would take a missing path for a hub id and try to download it
            raise LaunchError(f"the mlx engine needs a local model directory, got {path!r}", param="model_path")
        try:
            read_config(path)
        except (OSError, ValueError) as exc:
            raise LaunchError(f"{path} has no readable config.json: {exc}", param="model_path") from None
        engine = Engine(path, opts)
        engine.start()
        engine.loaded.wait()
        if engine.load_error is not None:
            exc = engine.load_error
            raise LaunchError(f"mlx-lm could not load {path}: {type(exc).__name__}: {exc}") from exc
        return cls(spec, opts, engine, _generation_defaults(Path(path)))

    def close(self) -> None:
        self.engine.stop()
        self.engine.model = None
        mx.clear_cache()

    def encode(self, request: GenerateRequest) -> list[int]:
        return encode_prompt(self.tokenizer, self.spec, request)

    def job(self, request: GenerateRequest, prompt: list[int]) -> Job:
        room = output_room(len(prompt), self.context, request)
        if request.response_format and request.response_format.get("type") not in (None, "text"):
            raise InvalidRequest("the mlx engine supports only text responses", param="response_format")

        def pick(value: Any, name: str, fallback: Any) -> Any:
            return value if value is not None else self.defaults.get(name, fallback)

        sampler = make_request_sampler(
            float(pick(request.temperature, "temperature", 1.0)),
            float(pick(request.top_p, "top_p", 1.0)),
            int(pick(request.top_k, "top_k", 0)),
            float(pick(request.min_p, "min_p", 0.0)),
            request.seed,
        )
        try:
            processors = make_logits_processors(
                repetition_penalty=request.repetition_penalty,
                presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty,
            )
        except ValueError as exc:  # mlx-lm checks the penalties
            raise InvalidRequest(str(exc), param="repetition_penalty") from None
        return Job(
            prompt=prompt,
            max_tokens=request.max_tokens or room,
            sampler=sampler,
            processors=processors,
            stop=self.no_stop if request.ignore_eos else self.eos_stop,
            logprobs=request.logprobs,
            loop=asyncio.get_running_loop(),
        )

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        if request.prompt_logprobs is not None:
            raise InvalidRequest("the mlx engine cannot return the prompt's logprobs (echo)", param="echo")
        request.check_no_logit_bias("mlx")
        prompt = await asyncio.to_thread(self.encode, request)
        job = self.job(request, prompt)
        stops = StopMatcher(request.stop)
        decoder = IncrementalDecoder(self.tokenizer)
        produced = 0
        finish: str | None = None
        engine_done = False
        ids: list[int] = []  # tokens whose text has not been sent yet
        self.engine.submit(job)
        try:
            while finish is None:
                step = await job.steps.get()
                if isinstance(step, BaseException):
                    engine_done = True
                    if isinstance(step, EngineError):
                        raise step
                    if isinstance(step, ValueError):  # mlx-lm refuses a request with ValueError
                        raise InvalidRequest(str(step)) from step
                    raise EngineError(f"mlx-lm failed: {type(step).__name__}: {step}") from step
                produced += 1
                engine_done = step.finish is not None
                # "stop" from the batch means an end-of-sequence token: it is not part of the text
                piece = ""
                if step.finish != "stop":
                    ids.append(step.token)
                    piece = decoder.feed(step.token)
                if step.finish is not None:
                    piece += decoder.flush()
                text, stopped = stops.feed(piece)
                if stopped:
                    finish = "stop"
                elif step.finish is not None:
                    finish = step.finish
                    text += stops.flush()
                logprobs = [step.logprob] if step.logprob is not None else None
                if finish is None and not text and not logprobs:
                    continue  # held back: part of a character, or a skipped special token
                chunk = Chunk(text=text, token_ids=ids or None, logprobs=logprobs)
                ids = []
                if finish is not None:
                    if stopped:
                        chunk.token_ids = None  # the text was cut inside these tokens
                    chunk.finish_reason = finish
                    chunk.usage = Usage(prompt_tokens=len(prompt), completion_tokens=produced)
                yield chunk
        finally:
            if not engine_done:
                self.engine.cancel(job)  # stopped here or closed by the client: free the slot


def _generation_defaults(path: Path) -> dict[str, Any]:
    """Sampling defaults the checkpoint recommends in generation_config.json."""
    try:
        config = json.loads((path / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if config.get("do_sample") is False:
        return {"temperature": 0.0}
    return {k: config[k] for k in ("temperature", "top_p", "top_k", "min_p") if config.get(k) is not None}
