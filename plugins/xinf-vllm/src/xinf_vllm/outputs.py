"""vLLM's ``RequestOutput`` deltas as xinf chunks: text, token ids, logprobs, the prompt's logprobs, usage.

Runs on the replica's event loop once per engine step and request, so the
common case (no logprobs) does no more than build one ``Chunk``.
"""

from __future__ import annotations

from typing import Any

from xinf.types import TokenLogprob

_LAST = 1 << 30  # rank of an entry vLLM gave none: after every ranked one


def alternatives(position: dict[int, Any], wanted: int) -> list[tuple[str, float]]:
    """The ``wanted`` most likely tokens of one position (vLLM adds the chosen one when it is not among them)."""
    if not wanted:
        return []
    ranked = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else _LAST)
    return [(lp.decoded_token or "", float(lp.logprob)) for lp in ranked[:wanted]]


def token_logprobs(output: Any, wanted: int) -> list[TokenLogprob]:
    """The logprobs of the tokens one ``CompletionOutput`` delta adds."""
    items = []
    for token_id, position in zip(output.token_ids, output.logprobs or []):
        chosen = position.get(token_id)
        if chosen is None:
            continue
        items.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=float(chosen.logprob),
                top_logprobs=alternatives(position, wanted),
            )
        )
    return items


def prompt_logprobs(out: Any, wanted: int, tokenizer: Any) -> list[TokenLogprob]:
    """The prompt's tokens with their logprobs (``echo``), the first with none, as OpenAI writes them.

    vLLM gives no text for the first token (nothing precedes it to score it
    against): it is decoded here.
    """
    ids = list(out.prompt_token_ids or [])
    positions = out.prompt_logprobs or []
    items = []
    for i, token_id in enumerate(ids):
        position = positions[i] if i < len(positions) else None
        chosen = position.get(token_id) if position else None
        if chosen is None:
            text = tokenizer.decode([token_id]) if tokenizer is not None else ""
            items.append(TokenLogprob(token=text, logprob=None))
            continue
        items.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=float(chosen.logprob),
                top_logprobs=alternatives(position, wanted),  # type: ignore[arg-type]
            )
        )
    return items
