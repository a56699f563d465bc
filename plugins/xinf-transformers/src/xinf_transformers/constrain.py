"""Constrained decoding with llguidance: the output must match a JSON schema.

Used for ``response_format`` (``json_schema``, ``json_object``) and for forced
tool calls (``tool_choice`` "required" or named: ``xinf.toolcalls.choice.
forced_schema``).  A transformers ``LogitsProcessor`` masks, at every step, the
tokens the grammar does not allow; once the JSON is complete only the
end-of-sequence tokens remain.  llguidance is optional: without it such
requests answer 400 and forced tool calls are not constrained.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from xinf.errors import InvalidRequest


def available() -> bool:
    return importlib.util.find_spec("llguidance") is not None


class Grammars:
    """One model's llguidance tokenizer, built on first use (it walks the whole vocabulary)."""

    def __init__(self, tokenizer: Any, n_vocab: int, eos_ids: list[int]):
        self.tokenizer = tokenizer
        self.n_vocab = n_vocab
        self.eos_ids = eos_ids
        self._ll: Any = None

    def processor(self, schema: dict[str, Any]) -> Any:
        """A fresh logits processor for one request."""
        import llguidance
        import llguidance.hf

        if self._ll is None:
            self._ll = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.n_vocab, eos_token=self.eos_ids)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
        error = llguidance.LLMatcher.validate_grammar(grammar, self._ll)  # "" when valid
        if error:
            raise InvalidRequest(f"the JSON schema cannot be used for constrained decoding: {error}")
        return _processor(llguidance.LLMatcher(self._ll, grammar), self.n_vocab)


def _processor(matcher: Any, n_vocab: int) -> Any:
    import llguidance.torch as lt
    import torch
    from transformers import LogitsProcessor

    class Masked(LogitsProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.prompt_len: int | None = None
            self.bitmask = lt.allocate_token_bitmask(1, n_vocab)

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.prompt_len is None:
                self.prompt_len = int(input_ids.shape[1])
            else:
                matcher.consume_token(int(input_ids[0, -1]))
            lt.fill_next_token_bitmask(matcher, self.bitmask, 0)
            width = scores.shape[-1]
            masked = scores[:, :n_vocab].clone()
            lt.apply_token_bitmask_inplace(masked, self.bitmask.to(masked.device))
            if width > n_vocab:  # padding rows of the output layer are never allowed
                masked = torch.cat([masked, torch.full_like(scores[:, n_vocab:], float("-inf"))], dim=-1)
            return masked

    return Masked()


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for (None for text)."""
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        return schema
    raise InvalidRequest(f"unsupported response_format type {kind!r}", param="response_format")
