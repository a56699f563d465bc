"""Prompts in, text out: chat templates, sampling settings and incremental detokenizing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from xinf.errors import InvalidRequest
from xinf.prompts import output_room
from xinf.types import GenerateRequest

GREEDY_BELOW = 1e-5  # temperatures under this mean greedy decoding


class Job(msgspec.Struct, kw_only=True):
    """One choice to generate, in token ids, with its sampling settings resolved."""

    prompt_ids: list[int]
    max_new_tokens: int
    eos_ids: list[int]
    ignore_eos: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def make_job(
    prompt_ids: list[int],
    request: GenerateRequest,
    *,
    context_length: int,
    eos_ids: Iterable[int],
    defaults: dict[str, Any],
) -> Job:
    """Check the lengths and resolve the sampling settings of one request."""
    max_new = output_room(
        len(prompt_ids), context_length, request, hint="launch with a larger --context_length for more room"
    )
    if request.logprobs is not None:
        raise InvalidRequest("the transformers engine does not return logprobs", param="logprobs")
    fmt = (request.response_format or {}).get("type")
    if fmt not in (None, "text"):
        raise InvalidRequest("the transformers engine supports only text responses", param="response_format")
    temperature = _pick(request.temperature, defaults.get("temperature"), 1.0)
    return Job(
        prompt_ids=prompt_ids,
        max_new_tokens=max_new,
        eos_ids=sorted(set(eos_ids)),
        ignore_eos=request.ignore_eos,
        temperature=float(temperature),
        top_p=float(_pick(request.top_p, defaults.get("top_p"), 1.0)),
        top_k=int(_pick(request.top_k, defaults.get("top_k"), 0) or 0),
        min_p=request.min_p or None,
        repetition_penalty=None if request.repetition_penalty in (None, 1.0) else request.repetition_penalty,
        seed=request.seed,
    )


def _pick(*values: Any) -> Any:
    return next(v for v in values if v is not None)


class Detokenizer:
    """Turns generated ids into text deltas.

    Decoding a token alone loses the spaces and multi-byte characters that
    depend on its neighbours, so each step decodes a short window of ids and
    emits what that window adds (the offsets scheme of vLLM and TGI).  Text
    ending in U+FFFD is an incomplete UTF-8 sequence: held until the next id.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, new_ids: list[int]) -> str:
        self.ids.extend(new_ids)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]
