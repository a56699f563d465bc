"""SGLang's offline engine inside the replica process.

``sglang.Engine`` runs its tokenizer manager on the replica's event loop and its
scheduler and detokenizer in subprocesses of its own (over ZMQ).  The plugin
renders the chat template with SGLang's own tokenizer, sends token ids to
``Engine.async_generate(stream=True)`` with a request id, and reads incremental
output (``incremental_streaming_output``).  Closing a stream aborts the request
in SGLang (``TokenizerManager.abort_request``), which frees its KV cache.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from xinf.errors import EngineError, InvalidRequest, LaunchError
from xinf.prompts import encode_prompt, output_room
from xinf.types import Chunk, GenerateRequest, ModelSpec, Placement, TokenLogprob, Usage
from xinf_sglang.args import sampling_params, server_kwargs


class SGLangModel:
    """A running ``sglang.Engine`` and what requests need from it."""

    def __init__(self, spec: ModelSpec, engine: Any, kwargs: dict[str, Any]):
        self.spec = spec
        self.engine = engine
        self.manager = engine.tokenizer_manager
        self.tokenizer = self.manager.tokenizer
        self.context = int(self.manager.context_len)
        self.incremental = bool(kwargs.get("incremental_streaming_output"))

    @classmethod
    def load(cls, spec: ModelSpec, options: dict[str, Any], placement: Placement) -> SGLangModel:
        import sglang
        from sglang.srt.server_args import ServerArgs

        kwargs = server_kwargs(spec, options, placement, ServerArgs.__struct_fields__)
        try:
            server_args = ServerArgs(**kwargs)
        except (TypeError, ValueError) as exc:
            raise LaunchError(f"invalid SGLang options: {exc}") from None
        try:
            engine = sglang.Engine(server_args=server_args)
        except Exception as exc:
            raise LaunchError(f"SGLang could not start: {type(exc).__name__}: {exc}") from exc
        return cls(spec, engine, kwargs)

    def close(self) -> None:
        self.engine.shutdown()

    def encode(self, request: GenerateRequest) -> list[int]:
        return encode_prompt(self.tokenizer, self.spec, request)

    def limits(self, request: GenerateRequest, prompt: list[int]) -> int:
        """``max_new_tokens`` for the request, after checking it fits the context."""
        return output_room(len(prompt), self.context, request)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        if request.prompt_logprobs is not None:
            raise InvalidRequest("the sglang engine cannot return the prompt's logprobs (echo)", param="echo")
        request.check_no_logit_bias("sglang")
        prompt = await asyncio.to_thread(self.encode, request)
        params = sampling_params(request, self.limits(request, prompt))
        rid = uuid.uuid4().hex
        want_logprobs = request.logprobs is not None
        finished = False
        stream: Any = None
        seen_text = seen_ids = seen_logprobs = 0  # read offsets, for non-incremental streaming
        try:
            stream = await self.engine.async_generate(
                input_ids=prompt,
                sampling_params=params,
                stream=True,
                rid=rid,
                return_logprob=want_logprobs,
                top_logprobs_num=request.logprobs or 0,
            )
            async for out in stream:
                meta = out["meta_info"]
                text = out.get("text") or ""
                ids = list(out.get("output_ids") or [])
                entries = meta.get("output_token_logprobs") or []
                tops = meta.get("output_top_logprobs") or []
                if not self.incremental:  # cumulative output: keep what is new
                    text, seen_text = text[seen_text:], len(text)
                    ids, seen_ids = ids[seen_ids:], len(ids)
                    entries, tops = entries[seen_logprobs:], tops[seen_logprobs:]
                    seen_logprobs += len(entries)
                logprobs = self._logprobs(entries, tops, request.logprobs) if want_logprobs else None
                reason = meta.get("finish_reason")
                if reason is None:
                    if text or logprobs:
                        yield Chunk(text=text, token_ids=ids or None, logprobs=logprobs)
                    continue
                finished = True
                kind = reason.get("type") if isinstance(reason, dict) else str(reason)
                if kind == "abort":
                    message = reason.get("message") or "aborted"
                    if reason.get("status_code") == 400:
                        raise InvalidRequest(f"SGLang refused the request: {message}")
                    raise EngineError(f"SGLang aborted the request: {message}")
                yield Chunk(
                    text=text,
                    token_ids=ids or None,
                    logprobs=logprobs,
                    finish_reason="length" if kind == "length" else "stop",
                    usage=Usage(
                        prompt_tokens=int(meta.get("prompt_tokens") or len(prompt)),
                        completion_tokens=int(meta.get("completion_tokens") or 0),
                    ),
                )
                return
        except ValueError as exc:  # SGLang validates requests (lengths, sampling params) with ValueError
            raise InvalidRequest(str(exc)) from None
        finally:
            if not finished:
                self.manager.abort_request(rid)  # the client went away: free the KV cache now
            if stream is not None:
                await stream.aclose()

    def _logprobs(self, entries: list[Any], tops: list[Any], top: int | None) -> list[TokenLogprob] | None:
        if not entries:
            return None
        result = []
        for i, (logprob, token_id, _text) in enumerate(entries):
            alternatives = []
            if top and i < len(tops) and tops[i]:
                alternatives = [(self.tokenizer.decode([t]), float(lp)) for lp, t, _ in tops[i][:top]]
            result.append(
                TokenLogprob(token=self.tokenizer.decode([token_id]), logprob=float(logprob), top_logprobs=alternatives)
            )
        return result
