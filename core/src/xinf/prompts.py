"""Prompt helpers for engines that tokenize with a Hugging Face tokenizer.

transformers, MLX, vLLM and SGLang all turn a request into token ids the same
way: the model's chat template (or the spec's override) with the request's
``chat_template_kwargs`` and ``tools``, then a check that prompt and output
fit the context.  One implementation keeps their errors the same.
"""

from __future__ import annotations

from typing import Any

from xinf.errors import ContextLengthExceeded, InvalidRequest
from xinf.types import GenerateRequest, ModelSpec
from xinf.vision import has_images, placeholders


def render_chat(tokenizer: Any, spec: ModelSpec, request: GenerateRequest, *, images: bool = False) -> str:
    """The prompt text of a chat through the model's own chat template.

    ``chat_template_kwargs`` (``enable_thinking`` among them) reach the template
    as variables and ``tools`` as its ``tools``.  A template that rejects the
    messages is the client's error (400).  Image parts (``xinf.vision``) reach
    the template as ``{"type": "image"}`` when the caller passes the images to
    the model itself (``images=True``); otherwise they are a 400.
    """
    if has_images(request.messages) and not images:
        raise InvalidRequest(
            f"{spec.name} is served here by an engine that does not read images; send text only, or launch the "
            "model on an engine that reads them (transformers, llama.cpp with a multimodal projector, vLLM)",
            param="messages",
            code="images_not_supported",
        )
    template = spec.chat_template or None
    if template is None and not getattr(tokenizer, "chat_template", None):
        template = spec.fallback_chat_template or None  # the model has none: the catalogue's
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise InvalidRequest(
            f"{spec.name} has no chat template; use /v1/completions or register the model with a chat_template",
            param="messages",
        )
    messages = [_flatten(m) for m in placeholders(request.messages or [])]
    kwargs = dict(request.chat_template_kwargs)
    if request.tools:
        kwargs["tools"] = request.tools
    if template is not None:
        kwargs["chat_template"] = template
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2's TemplateError, raise_exception() in templates, odd message shapes
        raise InvalidRequest(
            f"the chat template rejected the messages: {type(exc).__name__}: {exc}", param="messages"
        ) from None
    return str(text)


def encode_prompt(tokenizer: Any, spec: ModelSpec, request: GenerateRequest) -> list[int]:
    """Token ids of a chat or completion request."""
    if request.is_chat:
        # The template already wrote any BOS token the model wants.
        return list(tokenizer.encode(render_chat(tokenizer, spec, request), add_special_tokens=False))
    if request.prompt_ids is not None:
        size = len(tokenizer)
        bad = [i for i in request.prompt_ids if not 0 <= i < size]
        if bad:
            raise InvalidRequest(
                f"prompt token ids {bad[:5]} are not in the vocabulary (0 to {size - 1})", param="prompt"
            )
        return list(request.prompt_ids)
    return list(tokenizer.encode(request.prompt or ""))


def output_room(prompt_tokens: int, context_length: int, request: GenerateRequest, *, hint: str = "") -> int:
    """How many tokens the request may generate; a 400 when prompt and max_tokens do not fit.

    ``hint`` says how to get a bigger context on this engine (a launch option).
    """
    if prompt_tokens == 0:
        raise InvalidRequest("the prompt is empty", param="prompt")
    where = "messages" if request.is_chat else "prompt"
    suffix = f"; {hint}" if hint else ""
    if prompt_tokens >= context_length:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_tokens} tokens, more than the context size of {context_length}{suffix}",
            param=where,
        )
    room = context_length - prompt_tokens
    if request.max_tokens is not None and request.max_tokens > room:
        raise ContextLengthExceeded(
            f"the prompt has {prompt_tokens} tokens and max_tokens is {request.max_tokens}: together more than "
            f"the context size of {context_length}; ask for at most {room} tokens{suffix}",
            param="max_tokens",
        )
    return request.max_tokens if request.max_tokens is not None else room


def _flatten(message: dict[str, Any]) -> dict[str, Any]:
    """Text-only content parts become one string: most templates only handle strings."""
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return {**message, "content": "".join(str(p.get("text", "")) for p in content)}
    return message
