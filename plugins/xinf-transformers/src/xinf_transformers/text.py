"""Prompts in, text out: chat templates, sampling settings and incremental detokenizing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from xinf.errors import InvalidRequest
from xinf.prompts import output_room
from xinf.toolcalls.choice import forced_schema, is_forced
from xinf.types import GenerateRequest, TokenLogprob
from xinf_transformers.constrain import schema_of

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
    schema: dict[str, Any] | None = None  # constrained decoding: the output must match this JSON schema
    inputs: Any = None  # model inputs beside the ids (an image model's pixel_values...), for generate()

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
    constrained: bool = False,
) -> Job:
    """Check the lengths and resolve the sampling settings of one request."""
    max_new = output_room(
        len(prompt_ids), context_length, request, hint="launch with a larger --context_length for more room"
    )
    if request.logprobs is not None:
        raise InvalidRequest("the transformers engine does not return logprobs", param="logprobs")
    request.check_no_logit_bias("transformers")
    schema = schema_of(request.response_format)
    if request.tools and request.tool_choice is not None and is_forced(request.tool_choice) and constrained:
        if schema is not None:
            raise InvalidRequest(
                "response_format cannot be combined with a forced tool call (tool_choice)", param="response_format"
            )
        schema = forced_schema(request.tools, request.tool_choice)
    if schema is not None and not constrained:
        raise InvalidRequest(
            "JSON responses need the llguidance package in the transformers engine's environment: "
            "pip install llguidance",
            param="response_format",
        )
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
        schema=schema,
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

    def __init__(self, tokenizer: Any, *, keep_special: bool = False, drop: Iterable[int] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0
        # Tool-call formats mark calls with special tokens ([TOOL_CALLS], <|python_tag|>): those
        # are kept, and only the ids in ``drop`` (end-of-sequence) are left out of the text.
        self.skip_special = not keep_special
        self.drop = set(drop)

    def add(self, new_ids: list[int]) -> str:
        if self.drop:
            new_ids = [i for i in new_ids if i not in self.drop]
        self.ids.extend(new_ids)
        decode = self.tokenizer.decode
        skip = self.skip_special
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=skip)
        after = decode(self.ids[self.prefix :], skip_special_tokens=skip)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


def prompt_logprobs(chat: Any, ids: list[int], top: int) -> list[TokenLogprob]:
    """Each prompt token's log probability given the ones before it (one forward pass; the first has none)."""
    import torch

    model, tokenizer = chat.model, chat.tokenizer
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=model.device)).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        chosen = logp.gather(1, torch.tensor(ids[1:], device=logp.device).unsqueeze(1)).squeeze(1).tolist()
        best = logp.topk(top, dim=-1) if top else None

    def text(token: int) -> str:
        return str(tokenizer.decode([token]))

    items = [TokenLogprob(token=text(ids[0]), logprob=None)]
    for pos in range(1, len(ids)):
        alternatives = []
        if best is not None:
            values, indexes = best.values[pos - 1].tolist(), best.indices[pos - 1].tolist()
            alternatives = [(text(i), float(v)) for i, v in zip(indexes, values)]
        items.append(TokenLogprob(token=text(ids[pos]), logprob=float(chosen[pos - 1]), top_logprobs=alternatives))
    return items
