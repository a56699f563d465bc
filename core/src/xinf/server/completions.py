"""OpenAI completions: ``POST /v1/completions``.

A prompt is text, a list of token ids, or a list of either (up to 64 prompts).
``echo`` writes the prompt before the answer; with ``logprobs`` (or for a
token-id prompt, whose text only the engine knows) the engine returns the
prompt's tokens with their log probabilities, the first one null, as OpenAI
does.  ``max_tokens: 0`` with ``echo`` scores the prompt without generating.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from xinf import adapters
from xinf.errors import InvalidRequest
from xinf.model import RunningModel
from xinf.replica.handle import KEEPALIVE, KEEPALIVE_BATCH
from xinf.schemas import CompletionRequest
from xinf.server import limits
from xinf.server.http import decode, encode_json, json_response, read_body
from xinf.server.openai import fingerprint, keepalive, sampling_fields
from xinf.server.state import State, state
from xinf.server.streams import (
    Batch,
    Usage,
    chain,
    event_stream,
    first_and_rest,
    merged,
    streamed,
    until_disconnect,
)
from xinf.types import Chunk, GenerateRequest, TokenLogprob

MAX_PROMPTS = 64
Prompt = str | list[int]


def prompts_of(value: Any) -> list[Prompt]:
    """The request's prompts: text, token ids, or a list of either."""
    if isinstance(value, str):
        return [value]
    if all(_is_id(v) for v in value):
        return [list(value)]
    prompts: list[Prompt] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            prompts.append(item)
        elif isinstance(item, list) and item and all(_is_id(v) for v in item):
            prompts.append(list(item))
        else:
            raise InvalidRequest(
                f"prompt[{i}] must be a string or a non-empty list of token ids (integers >= 0)", param="prompt"
            )
    if len(prompts) > MAX_PROMPTS:
        raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
    return prompts


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def completion_request(req: CompletionRequest, prompt: Prompt, model: RunningModel, st: State) -> GenerateRequest:
    if "generate" not in model.spec.abilities:
        raise InvalidRequest(f"model {model.uid!r} cannot complete text", param="model")
    if req.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix", code="unsupported_parameter")
    scoring = req.max_tokens == 0
    if scoring and not req.echo:
        raise InvalidRequest("max_tokens 0 needs echo: true (it returns only the prompt)", param="max_tokens")
    fields = sampling_fields(req, st, 1 if scoring else (req.max_tokens or 16))
    # The prompt's tokens come from the engine when their logprobs are wanted, or when only the engine knows the text.
    wants_prompt = req.echo and (req.logprobs is not None or not isinstance(prompt, str))
    return GenerateRequest(
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_ids=None if isinstance(prompt, str) else prompt,
        prompt_logprobs=(req.logprobs or 0) if wants_prompt else None,
        logprobs=None if scoring else req.logprobs,
        **fields,
    )


def completion_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [dict(t.top_logprobs) if t.logprob is not None else None for t in items],
        "text_offset": offsets,
    }


class Choices:
    """Per choice: echo, text, logprobs and finish; drops the generated token when only scoring."""

    def __init__(self, req: CompletionRequest, prompts: list[Prompt], gens: list[GenerateRequest]):
        self.req = req
        n = req.n
        self.total = len(prompts) * n
        self.scoring = req.max_tokens == 0
        self.gens = [gens[i // n] for i in range(self.total)]
        self.echo: list[str] = []
        for i in range(self.total):
            prompt = prompts[i // n]
            self.echo.append(prompt if req.echo and isinstance(prompt, str) else "")
        self.prompt_items: list[list[TokenLogprob]] = [[] for _ in range(self.total)]
        self.seen = [False] * self.total
        self.usage = Usage()

    def take(self, chunk: Chunk) -> tuple[str, list[TokenLogprob]]:
        """The text and logprobs this chunk adds to its choice (echo first)."""
        i = chunk.index
        text, items = "", []
        if not self.seen[i]:
            self.seen[i] = True
            self.check_first(chunk)
            if chunk.prompt_logprobs is not None:
                self.echo[i] = "".join(t.token for t in chunk.prompt_logprobs)
                items = list(chunk.prompt_logprobs)
            text = self.echo[i]
        if self.scoring:
            if chunk.usage is not None:
                chunk.usage.completion_tokens = 0
        else:
            text += chunk.text
            items += chunk.logprobs or []
        self.usage.add(chunk)
        return text, items

    def check_first(self, chunk: Chunk) -> None:
        """A choice's first chunk must bring the prompt's tokens when they were asked for."""
        if self.gens[chunk.index].prompt_logprobs is not None and chunk.prompt_logprobs is None:
            raise InvalidRequest(
                "this model's engine cannot return the prompt's tokens (echo with logprobs, or echo of a "
                "token-id prompt)",
                param="echo",
            )

    def finish(self, chunk: Chunk) -> str | None:
        if chunk.finish_reason is None:
            return None
        return "length" if self.scoring else chunk.finish_reason


async def completions(request: Request) -> Response:
    st = state(request)
    req = decode(await read_body(request, st.max_body), CompletionRequest)
    model, adapter = adapters.lookup(st.manager, req.model, req.lora_name)
    prompts = prompts_of(req.prompt)
    limits.check_choices(req.n, len(prompts), st.settings)
    gens = [completion_request(req, prompt, model, st) for prompt in prompts]
    for gen in gens:
        gen.adapter = adapter
    pings = keepalive(st, req.stream)
    cid = f"cmpl-{secrets.token_hex(12)}"
    tracked = st.requests.start(model.uid, req.request_id or cid, gens[0].max_tokens, req.n * len(gens))
    stream = merged([model.batches(g, req.n, pings) for g in gens], req.n)
    first, rest = await first_and_rest(st.requests.watch(tracked, stream))
    choices = Choices(req, prompts, gens)
    if first is not None and first is not KEEPALIVE_BATCH:
        choices.check_first(first[0])  # a 400 before any output is sent
    meta = {"id": cid, "created": int(time.time()), "fp": fingerprint(st, model)}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return streamed(completion_events(chain(first, rest), meta, req, choices, include_usage))
    return json_response(await until_disconnect(request, completion_body(chain(first, rest), meta, req, choices)))


async def completion_body(
    stream: AsyncIterator[Batch], meta: dict[str, Any], req: CompletionRequest, choices: Choices
) -> Any:
    total = choices.total
    texts: list[list[str]] = [[] for _ in range(total)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(total)]
    finish: list[str | None] = [None] * total
    async for batch in stream:
        for chunk in batch:
            if chunk is KEEPALIVE:
                continue
            text, items = choices.take(chunk)
            texts[chunk.index].append(text)
            logprobs[chunk.index].extend(items)
            finish[chunk.index] = choices.finish(chunk) or finish[chunk.index]
    wants = req.logprobs is not None
    body = [
        {
            "index": i,
            "text": "".join(texts[i]),
            "logprobs": completion_logprobs(logprobs[i], 0) if wants else None,
            "finish_reason": finish[i] or "stop",
        }
        for i in range(total)
    ]
    return {
        "id": meta["id"],
        "object": "text_completion",
        "created": meta["created"],
        "model": req.model,
        "system_fingerprint": meta["fp"],
        "choices": body,
        "usage": choices.usage.as_dict(req.n),
    }


def completion_events(
    stream: AsyncIterator[Batch], meta: dict[str, Any], req: CompletionRequest, choices: Choices, include_usage: bool
) -> AsyncIterator[bytes]:
    base: dict[str, Any] = {
        "id": meta["id"],
        "object": "text_completion",
        "created": meta["created"],
        "model": req.model,
        "system_fingerprint": meta["fp"],
    }
    offsets = [0] * choices.total
    heads = [b'{"index":%d,"text":' % i for i in range(choices.total)]  # text alone: no dict in between
    rest = b',"logprobs":null,"finish_reason":null}'

    def choice(chunk: Chunk) -> bytes | None:
        text, items = choices.take(chunk)
        if not (text or items):
            return None
        i = chunk.index
        offset = offsets[i]
        offsets[i] += len(text)
        if not items or req.logprobs is None:
            return b"".join((heads[i], encode_json(text), rest))
        event = _text(i, text)
        event["logprobs"] = completion_logprobs(items, offset)
        return encode_json(event)

    return event_stream(
        stream,
        base,
        total=choices.total,
        n=req.n,
        include_usage=include_usage,
        opening=[],
        choice=choice,
        closing=lambda i, finish: _text(i, "", finish),
        finish_of=choices.finish,
    )


def _text(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
