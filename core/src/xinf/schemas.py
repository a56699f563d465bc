"""Request bodies of the HTTP API, decoded and validated by msgspec.

Top-level unknown fields are refused (as OpenAI does) so that a misspelt
parameter is a 400 that names it rather than silently ignored.  Launch
requests are the exception: Xinference clients send many fields, and unknown
ones are engine options.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
MaxTokens = Annotated[int, Meta(ge=1, le=1 << 31)]
N = Annotated[int, Meta(ge=1, le=128)]
Seed = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
Stop = Annotated[str, Meta(min_length=1, max_length=1024)]


class StreamOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class Sampling(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields shared by chat and completion requests."""

    model: str
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=-1, le=1 << 20)] | None = None
    min_p: TopP | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    n: N = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], Meta(max_length=16)] | None = None
    seed: Seed | None = None
    user: str | None = None
    ignore_eos: bool = False
    logit_bias: dict[str, float] | None = None
    # Xinference's generate_config["request_id"]: names the request for abort and progress.
    request_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    # Xinference's generate_config key: the LoRA adapter to run with (also "<uid>:<adapter>" as model).
    lora_name: str | None = None

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(Sampling, kw_only=True, forbid_unknown_fields=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None


class CompletionRequest(Sampling, kw_only=True, forbid_unknown_fields=True):
    """``prompt``: text, token ids, or a list of either (checked in ``xinf.server.completions``).

    ``max_tokens`` 0 is allowed with ``echo`` (scoring a text's own tokens).
    """

    prompt: str | Annotated[list[Any], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=0, le=1 << 31)] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Meta(ge=1, le=1)] | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: str | Annotated[list[Any], Meta(min_length=1)]  # texts or token ids: see xinf.server.embeddings
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1, le=65536)] | None = None
    user: str | None = None


class LaunchRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``POST /v1/models``: the fields of Xinference's launch; the rest are engine options."""

    model_name: str | None = None
    model_uid: str | None = None
    model_engine: str | None = None
    model_type: str | None = None
    model_format: str | None = None
    model_size_in_billions: float | str | None = None
    quantization: str | None = None
    replica: Annotated[int, Meta(ge=1, le=64)] = 1
    n_gpu: int | str | None = "auto"
    gpu_idx: int | list[int] | None = None
    model_path: str | None = None
    enable_thinking: bool | None = None
    envs: dict[str, str] | None = None
    request_limits: Annotated[int, Meta(ge=1)] | None = None
    worker_ip: str | None = None
    enable_virtual_env: bool | None = None
    virtual_env_packages: list[str] | None = None
    virtual_env_find_links: list[str] | None = None
    download_hub: Literal["huggingface", "modelscope", "csghub"] | None = None
    # A GGUF vision model's projector (llama.cpp's mmproj): one of its family's multimodal_projectors, or a path
    multimodal_projector: str | None = None
    autostart: bool = False  # launch it again whenever the server starts (an autostart entry)
    routing: Literal["least_busy", "prefix"] | None = None  # default: XINF_ROUTING
    # LoRA adapters: {"lora_list": [{"lora_name", "local_path"[, "scale"]}]} (xinf.adapters)
    peft_model_config: dict[str, Any] | None = None
    # Accepted for compatibility with Xinference clients, unused here.
    n_worker: int | None = None
    replica_config: list[dict[str, Any]] | None = None


LAUNCH_FIELDS = set(LaunchRequest.__struct_fields__) | {"size_in_billions"}


class RegisterRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/model_registrations/{type}``: ``model`` is the spec as JSON text or an object."""

    model: str | dict[str, Any]
    persist: bool = False
