"""A request's sampling parameters for vLLM: sampling fields, stops, logprobs, logit biases, structured outputs.

Forced tool calls (``tool_choice`` required or a named function) and
``response_format`` JSON answers are constrained with vLLM's structured
outputs; the engine is started with JSON without free whitespace (see
``engine.engine_args``), so that even a model of random weights ends its JSON.
"""

from __future__ import annotations

from typing import Any, Protocol

from xinf.errors import ContextLengthExceeded, InvalidRequest
from xinf.toolcalls import ALIASES, PARSERS, known
from xinf.toolcalls.choice import forced_schema, is_forced
from xinf.types import GenerateRequest, ModelSpec


class Model(Protocol):
    """What sampling needs of ``engine.VllmModel``."""

    spec: ModelSpec
    max_model_len: int
    defaults: dict[str, Any]


# Sampling fields of GenerateRequest that map one to one onto vLLM's SamplingParams.
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


def params(model: Model, request: GenerateRequest, prompt_tokens: int) -> Any:
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    room = model.max_model_len - prompt_tokens
    if room < 1:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_tokens} tokens, which leaves no room to answer within "
            f"this model's context length of {model.max_model_len} (max_model_len)"
        )
    fields: dict[str, Any] = dict(model.defaults)
    for name in _SAMPLING:
        value = getattr(request, name)
        if value is not None:
            fields[name] = value
    if fields.get("top_k") == -1:
        fields["top_k"] = 0  # OpenAI clients write -1 for "no limit"; vLLM writes 0
    structured = None
    fmt = request.response_format or {}
    if fmt.get("type") == "json_object":
        structured = StructuredOutputsParams(json_object=True)
    elif fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        structured = StructuredOutputsParams(json=schema)
    elif fmt.get("type") not in (None, "text"):
        raise InvalidRequest(f"unsupported response_format type {fmt.get('type')!r}", param="response_format")
    if forces_call(model, request):
        if structured is not None:
            raise InvalidRequest(
                "response_format cannot be combined with a forced tool call (tool_choice)", param="response_format"
            )
        structured = StructuredOutputsParams(json=forced_schema(request.tools, request.tool_choice))
    try:
        return SamplingParams(
            **fields,
            # A client's max_tokens past the context end is cut there, finishing with "length".
            max_tokens=min(request.max_tokens or room, room),
            seed=request.seed,
            stop=list(request.stop) or None,
            ignore_eos=request.ignore_eos,
            logprobs=request.logprobs,
            prompt_logprobs=request.prompt_logprobs,
            logit_bias=request.logit_bias or None,
            # A family's tool-call tags may be special tokens, which the parser must see (as vLLM's own
            # Hermes parser does).
            skip_special_tokens=not parses_tools(model, request),
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,
        )
    except (ValueError, VLLMClientError) as exc:  # vLLM's range checks (temperature, top_p ...)
        raise InvalidRequest(str(exc)) from None


def check_tools(model: Model, request: GenerateRequest) -> None:
    """400 for tools xinf cannot read back from this model's output on vLLM (rather than ignoring them)."""
    if request.tools and request.tool_choice != "none" and not known(model.spec.tool_parser):
        written = f"writes them as {model.spec.tool_parser!r}" if model.spec.tool_parser else "declares no format"
        raise InvalidRequest(
            f"model {model.spec.name!r} cannot make tool calls on the vLLM engine: xinf reads tool calls in the "
            f"formats {', '.join(sorted(ALIASES) + sorted(PARSERS))} and this model's family {written}",
            param="tools",
            code="unsupported_parameter",
        )


def forces_call(model: Model, request: GenerateRequest) -> bool:
    """Whether this request's output is constrained to one tool call (``required`` or a named function)."""
    return bool(request.tools) and known(model.spec.tool_parser) is not None and is_forced(request.tool_choice)


def constrained_param(model: Model, request: GenerateRequest) -> str | None:
    """The request field whose JSON schema constrains the output (named in grammar errors), if any."""
    if forces_call(model, request):
        return "tools"
    fmt = request.response_format or {}
    return "response_format" if fmt.get("type") in ("json_object", "json_schema") else None


def parses_tools(model: Model, request: GenerateRequest) -> bool:
    """Whether the core parses tool calls out of this request's text (so special tokens must stay in it)."""
    return bool(request.tools and request.messages is not None and known(model.spec.tool_parser)) and (
        request.tool_choice != "none"
    )
