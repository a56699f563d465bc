"""Memory one llama.cpp replica needs, and how many layers fit the devices.

The approach is Ollama's ``EstimateGPULayers``, which xllamacpp ports as
``xllamacpp.estimate_gpu_layers``: weights per layer from the GGUF tensor
list, a KV cache per layer, a compute-graph size for full and for partial
offload, and a per-device reserve.  Where we differ, and why:

- Layers are placed the way llama.cpp places them (``llama_model::load_tensors``):
  the last ``n_gpu_layers`` of ``n_layer + 1`` (the output layer counts as one)
  go to the devices, split in proportion to the devices' free memory.  The
  reference walks layers round-robin over the GPUs, which llama.cpp never does.
- We try every layer count and keep the largest that fits every device.  The
  reference estimates, but Xinference then writes its result into a copy of
  ``tensor_split`` and leaves ``n_gpu_layers`` at "all": a model that does not
  fit is loaded whole and runs out of memory.  Here the count is what the
  scheduler places and what ``load`` passes to llama.cpp.
- The input embedding stays in host memory (llama.cpp keeps the input layer on
  the CPU); the reference counts ``token_embd`` on the GPU.  When the output
  matrix is tied to the embedding, llama.cpp duplicates it onto the output
  device, and so do we.
- KV cache: llama.cpp's own layout (``llama_kv_cache``): ``n_ctx`` padded to
  256 cells and split into one stream per slot (unless ``kv_unified``),
  separate K and V types with their exact block sizes (q8_0 is 34 bytes per 32
  values, not the reference's 1 byte), per-layer KV head counts (0 for
  recurrent layers), and sliding-window layers sized to the window.  The
  reference uses one cache type for K and V and rounds q8_0/q4_0 to 1 and
  0.5 bytes.
- Compute graph: llama.cpp reserves the graph for one micro-batch
  (``n_ubatch`` = 512 tokens), not ``n_batch`` (2048) as Xinference passes, and
  since it computes logits only for the tokens that need them the
  ``vocab x batch`` term is gone.  Each slot attends to its own
  ``n_ctx / n_parallel`` cells, so the attention term uses that, not the whole
  ``n_ctx`` the reference uses.  With flash attention (llama.cpp's ``auto``
  default turns it on wherever it is supported) the attention scores are never
  materialised.  The formulas below were fitted to the compute buffers
  llama.cpp reports for four model shapes (see ``graph_size``).
- Partial offload: the devices also receive copies of host weights for large
  batches (``op_offload``); we add the largest such weight (usually the output
  matrix), which is what Ollama's ``embedding x vocab x 105/128`` term stands
  for, computed from the real tensor size instead of assuming Q6_K.
- Unknown architectures get the same transformer formulas rather than the
  reference's ``kv / 6`` guess; multimodal projectors (``mmproj.path``) go to
  the first device, as in the reference.

llama.cpp can also fit parameters itself at load (``fit_params``, on by
default): it loads the model without allocating and measures.  That is exact
but happens in the replica, after placement, so the scheduler cannot use it.
We keep it as the safety net: when no layer count is chosen here (no device
the core can see, such as Apple's Metal, or a failed estimate) ``load`` leaves
``n_gpu_layers`` at llama.cpp's ``-1`` and llama.cpp fits all the layers that
fit.  When we choose a count, llama.cpp takes it as set by the user.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from xinf.gguf import ArrayInfo, GGUFHeader, TensorInfo, tensor_nbytes, type_info
from xinf.units import MiB, format_bytes
from xinf_llamacpp.options import KV_PAD, Context, flash_attention, ggml_type_of, parse_bool

#: What a GPU needs before any model data: the CUDA context, cuBLAS workspaces
#: and allocator slack.  xllamacpp's estimator defaults to the same 512 MiB
#: (``memory_min``); Ollama reserves about 457 MiB on CUDA.
DEVICE_RESERVE = 512 * MiB
F16 = 1

#: Layers with a sliding window when the GGUF does not say (``sliding_window_pattern``):
#: every n-th layer is global, the others slide (llama.cpp's ``set_swa_pattern``).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}

_BLOCK = re.compile(r"^blk\.(\d+)\.")
_INPUT = ("token_embd.", "token_embd_norm.", "position_embd.", "token_types.")


@dataclass
class ModelShape:
    """The numbers the estimate needs, read from a GGUF header."""

    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: list[int]
    head_k: int
    head_v: int
    n_vocab: int
    n_ctx_train: int | None
    sliding_window: int = 0
    swa_layers: list[bool] = field(default_factory=list)
    layer_bytes: list[int] = field(default_factory=list)
    #: the largest matrix of each layer: what op offload copies to a device
    layer_largest: list[int] = field(default_factory=list)
    input_bytes: int = 0
    output_bytes: int = 0
    #: bytes of the embedding when the output matrix is tied to it: llama.cpp
    #: duplicates it onto the output device, the host shares one copy
    tied_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_layers(self) -> int:
        """What ``n_gpu_layers`` counts: the repeating layers and the output layer."""
        return self.n_layer + 1

    @property
    def weights(self) -> int:
        return self.input_bytes + sum(self.layer_bytes) + self.output_bytes

    @classmethod
    def from_header(cls, header: GGUFHeader) -> ModelShape:
        arch = header.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{header.path} has no general.architecture")

        def key(name: str, default: Any = None) -> Any:
            return header.get(f"{arch}.{name}", default)

        n_layer = int(key("block_count", 0))
        if n_layer <= 0:
            raise ValueError(f"{header.path} has no {arch}.block_count")
        n_embd = int(key("embedding_length", 0))
        n_head_list = _per_layer(key("attention.head_count", 0), n_layer)
        n_head_kv = _per_layer(key("attention.head_count_kv", max(n_head_list)), n_layer)
        n_head = max(n_head_list) or 1
        head_default = n_embd // n_head if n_head else 0
        head_k = int(key("attention.key_length", head_default))
        head_v = int(key("attention.value_length", head_default))
        n_ff = max(_per_layer(key("feed_forward_length", 0), n_layer)) or 4 * n_embd
        n_expert_used = int(key("expert_used_count", 0) or 0)
        if n_expert_used:
            n_ff = max(n_ff, int(key("expert_feed_forward_length", 0) or 0) * n_expert_used)
        tokens = header.get("tokenizer.ggml.tokens")
        n_vocab = int(key("vocab_size", 0) or (tokens.length if isinstance(tokens, ArrayInfo) else len(tokens or [])))
        ctx_train = key("context_length")
        shape = cls(
            architecture=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_ff=n_ff,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_k=head_k,
            head_v=head_v,
            n_vocab=n_vocab,
            n_ctx_train=int(ctx_train) if ctx_train else None,
        )
        shape._read_swa(key("attention.sliding_window", 0), key("attention.sliding_window_pattern"))
        shape._read_tensors(header.tensors)
        return shape

    def _read_swa(self, window: Any, pattern: Any) -> None:
        self.sliding_window = int(window or 0)
        self.swa_layers = [False] * self.n_layer
        if not self.sliding_window:
            return
        if isinstance(pattern, list):
            self.swa_layers = [bool(v) for v in pattern[: self.n_layer]]
            self.swa_layers += [False] * (self.n_layer - len(self.swa_layers))
            return
        period = int(pattern) if isinstance(pattern, int) else SWA_PATTERNS.get(self.architecture, 0)
        if period <= 0:
            self.notes.append(
                f"{self.architecture} has a sliding window but no known layer pattern: "
                "every layer is counted with the full context (an overestimate)"
            )
            return
        self.swa_layers = [il % period < period - 1 for il in range(self.n_layer)]

    def _read_tensors(self, tensors: list[TensorInfo]) -> None:
        self.layer_bytes = [0] * self.n_layer
        self.layer_largest = [0] * self.n_layer
        embedding = 0
        has_output = False
        for t in tensors:
            match = _BLOCK.match(t.name)
            if match and int(match.group(1)) < self.n_layer:
                il = int(match.group(1))
                self.layer_bytes[il] += t.nbytes
                if len(t.dims) >= 2:
                    self.layer_largest[il] = max(self.layer_largest[il], t.nbytes)
            elif t.name.startswith(_INPUT):
                self.input_bytes += t.nbytes
                if t.name == "token_embd.weight":
                    embedding = t.nbytes
            else:
                # output, output_norm, and the rare tensors outside the blocks
                # (rope factors, extra next-token layers): with the output layer.
                self.output_bytes += t.nbytes
                has_output = has_output or t.name == "output.weight"
        if not has_output:
            self.tied_bytes = embedding

    # -------------------------------------------------------------- KV cache

    def kv_per_token(self, type_k: int = F16, type_v: int = F16) -> int:
        """K and V bytes one token takes in every layer (a full-attention cell)."""
        return sum(
            tensor_nbytes((self.head_k * h,), type_k) + tensor_nbytes((self.head_v * h,), type_v)
            for h in self.n_head_kv
            if h > 0
        )

    def kv_bytes(self, ctx: Context, type_k: int = F16, type_v: int = F16, swa_full: bool = False) -> list[int]:
        """Bytes of K and V cache for each layer."""
        n_seq = max(1, ctx.n_parallel)
        streams = 1 if ctx.kv_unified else n_seq
        cells = kv_cells(ctx)  # per stream
        swa_cells = cells
        if self.sliding_window and not swa_full:
            window = self.sliding_window * (n_seq if ctx.kv_unified else 1) + ubatch(ctx)
            swa_cells = min(cells, _pad(window, KV_PAD))
        out = []
        for il in range(self.n_layer):
            heads = self.n_head_kv[il]
            if heads <= 0:  # recurrent / convolution layers keep no KV cache
                out.append(0)
                continue
            per_cell = tensor_nbytes((self.head_k * heads,), type_k) + tensor_nbytes((self.head_v * heads,), type_v)
            n = swa_cells if self.swa_layers[il] else cells
            out.append(per_cell * n * streams)
        return out


def kv_cells(ctx: Context) -> int:
    """KV cells per stream (one stream per slot unless ``kv_unified``)."""
    return ctx.per_slot


def ubatch(ctx: Context) -> int:
    """Tokens in one micro-batch: llama.cpp caps the batch at the context size."""
    return max(1, min(ctx.n_ubatch, ctx.n_batch, ctx.n_ctx))


def graph_size(shape: ModelShape, ctx: Context, flash_attn: bool) -> int:
    """Compute buffer of one device running the whole graph for one micro-batch.

    Fitted to the CPU compute buffers llama.cpp reported (``sched_reserve``) for
    SmolLM2-135M and three random llama shapes (embedding 256-1024, feed-forward
    1024-4096) at 512-32768 context: with flash attention the measured sizes
    are within -3%..+17% of this, without it within -5%..+8%.  The
    per-context-token slopes are exact: 2 bytes per micro-batch token with flash
    attention (the f16 mask), ``4 * (1 + n_head)`` bytes without (the scores
    and their softmax, as in Ollama's llama formula).
    """
    ub = ubatch(ctx)
    per_slot = kv_cells(ctx)
    activations = 4 * ub * (2 * shape.n_embd + 4 * shape.n_ff)
    if flash_attn:
        return activations + 2 * ub * per_slot
    attention = 4 * ub * (1 + 4 * shape.n_embd + per_slot * (1 + shape.n_head))
    return math.ceil(1.1 * max(activations, attention))


# ---------------------------------------------------------------- the plan


@dataclass
class Plan:
    """Where one replica's memory goes for a given layer count."""

    gpu_layers: int
    total_layers: int
    per_device: list[int]
    host: int
    weights: int
    kv_cache: int
    graph: int
    fits: bool
    context: Context
    kv_per_token: int
    notes: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> int:
        return sum(self.per_device) + self.host - self.weights - self.kv_cache


@dataclass
class EstimateOptions:
    """The launch options the estimate depends on."""

    context: Context
    type_k: int = F16
    type_v: int = F16
    flash_attn: bool = True
    swa_full: bool = False
    no_kv_offload: bool = False
    op_offload: bool = True
    n_gpu_layers: int | None = None  # None: choose
    projector: int = 0
    projector_on_gpu: bool = True
    # LoRA adapter bytes by layer (n_layer: the output layer, -1: the input embeddings); see adapter_layers
    adapters: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any], context: Context, projector: int = 0) -> EstimateOptions:
        layers = options.get("n_gpu_layers")
        chosen: int | None = None
        if layers is not None:
            try:
                chosen = int(layers)
            except (TypeError, ValueError):
                from xinf.errors import LaunchError

                raise LaunchError(f"option n_gpu_layers expects a whole number, got {layers!r}") from None
            if chosen == -1:  # llama.cpp's "auto": let the estimate choose
                chosen = None
        return cls(
            context=context,
            type_k=ggml_type_of(options.get("cache_type_k", F16), "cache_type_k"),
            type_v=ggml_type_of(options.get("cache_type_v", F16), "cache_type_v"),
            flash_attn=flash_attention(options.get("flash_attn_type", "auto")),
            swa_full=parse_bool(options.get("swa_full", False), "swa_full"),
            no_kv_offload=parse_bool(options.get("no_kv_offload", False), "no_kv_offload"),
            op_offload=not parse_bool(options.get("no_op_offload", False), "no_op_offload"),
            n_gpu_layers=chosen,
            projector=projector,
            projector_on_gpu=parse_bool(options.get("mmproj_use_gpu", True), "mmproj_use_gpu"),
        )


def adapter_layers(tensor_bytes: dict[str, int], n_layer: int) -> dict[int, int]:
    """LoRA bytes by base tensor name -> by layer, as ``EstimateOptions.adapters`` wants them."""
    out: dict[int, int] = {}
    for name, size in tensor_bytes.items():
        parts = name.split(".")
        if parts[0] == "blk" and len(parts) > 1 and parts[1].isdigit():
            layer = int(parts[1])
        elif name.startswith("token_embd"):
            layer = -1
        else:
            layer = n_layer  # output.weight and the like
        out[layer] = out.get(layer, 0) + size
    return out


def plan(shape: ModelShape, settings: EstimateOptions, free: list[int]) -> Plan:
    """The plan for devices with ``free`` bytes each: the largest layer count that fits, or the one asked for."""
    total = shape.total_layers
    if not free:
        return _plan_for(shape, settings, free, 0)
    if settings.n_gpu_layers is not None:
        n = total if settings.n_gpu_layers < 0 else min(settings.n_gpu_layers, total)
        chosen = _plan_for(shape, settings, free, n)
        if not chosen.fits:
            chosen.notes.append(f"n_gpu_layers={settings.n_gpu_layers} was given: kept although it may not fit")
        return chosen
    # The need is not monotonic in the layer count (the full-offload graph
    # drops the host-weight copies), so try every count from the top.
    for n in range(total, -1, -1):
        candidate = _plan_for(shape, settings, free, n)
        if candidate.fits:
            return candidate
    return candidate


def _plan_for(shape: ModelShape, s: EstimateOptions, free: list[int], n: int) -> Plan:
    ctx = s.context
    kv = shape.kv_bytes(ctx, s.type_k, s.type_v, s.swa_full)
    graph = graph_size(shape, ctx, s.flash_attn)
    where = _layer_devices(shape.n_layer, n, free)  # device index per layer (None: host), output last
    per_device, host, on_device = _weights_and_cache(shape, s, where, kv, len(free))
    # Logits of one token per slot, kept on the host for sampling.
    host += 4 * shape.n_vocab * max(1, ctx.n_parallel)
    device_graph, host_graph = _compute_buffers(shape, s, where, n, graph, on_device)
    per_device = [need + extra for need, extra in zip(per_device, device_graph)]
    host += host_graph
    return Plan(
        gpu_layers=n,
        total_layers=shape.total_layers,
        per_device=per_device,
        host=host,
        weights=shape.weights + s.projector + sum(s.adapters.values()),
        kv_cache=sum(kv),
        graph=graph,
        fits=all(need <= f for need, f in zip(per_device, free)),
        context=ctx,
        kv_per_token=shape.kv_per_token(s.type_k, s.type_v),
        notes=list(shape.notes),
    )


def _weights_and_cache(
    shape: ModelShape, s: EstimateOptions, where: list[int | None], kv: list[int], devices: int
) -> tuple[list[int], int, list[bool]]:
    """Bytes per device and on the host for the weights, the KV cache and the projector, placed as ``where``
    says; and which devices hold any layer."""
    per_device = [DEVICE_RESERVE] * devices
    host = shape.input_bytes
    on_device = [False] * devices
    for il in range(shape.n_layer):
        d = where[il]
        layer = shape.layer_bytes[il] + s.adapters.get(il, 0)  # llama.cpp keeps a LoRA beside its tensor
        if d is None:
            host += layer
        else:
            per_device[d] += layer
            on_device[d] = True
        if d is not None and not s.no_kv_offload:
            per_device[d] += kv[il]
        else:
            host += kv[il]
    out_dev = where[shape.n_layer]
    host += s.adapters.get(-1, 0)
    if out_dev is None:
        host += shape.output_bytes + s.adapters.get(shape.n_layer, 0)
    else:
        per_device[out_dev] += shape.output_bytes + shape.tied_bytes + s.adapters.get(shape.n_layer, 0)
        on_device[out_dev] = True
    if s.projector:
        if devices and s.projector_on_gpu:
            per_device[0] += s.projector
        else:
            host += s.projector
    return per_device, host, on_device


def _compute_buffers(
    shape: ModelShape, s: EstimateOptions, where: list[int | None], n: int, graph: int, on_device: list[bool]
) -> tuple[list[int], int]:
    """The compute graph's bytes on each device and on the host."""
    devices = len(on_device)
    if not devices:
        return [], graph
    copy = 0
    if n < shape.total_layers and s.op_offload:
        host_weights = [shape.layer_largest[il] for il in range(shape.n_layer) if where[il] is None]
        if where[shape.n_layer] is None:
            host_weights.append(max(shape.output_bytes, shape.tied_bytes))
        copy = max(host_weights, default=0)
    # Devices holding layers run their part of the graph; with op
    # offload the main device also runs big host-layer batches.
    per_device = [graph + copy if on_device[d] or (d == 0 and s.op_offload) else 0 for d in range(devices)]
    # The host keeps a graph for its own layers, and small input buffers otherwise.
    host = graph if n < shape.total_layers else 4 * ubatch(s.context) * shape.n_embd * 2
    return per_device, host


def _layer_devices(n_layer: int, n_gpu: int, free: list[int]) -> list[int | None]:
    """The device of each layer 0..n_layer (n_layer is the output layer), as llama.cpp assigns them.

    The last ``n_gpu`` layers are offloaded; device d takes the share of them
    given by its free memory (llama.cpp's default ``tensor_split``).
    """
    where: list[int | None] = [None] * (n_layer + 1)
    if not free or n_gpu <= 0:
        return where
    act = min(n_gpu, n_layer + 1)
    start = n_layer + 1 - act
    weights = [max(f, 0) for f in free]
    if not any(weights):
        weights = [1] * len(free)
    cumulative, running = [], 0.0
    for w in weights:
        running += w
        cumulative.append(running / sum(weights))
    for il in range(start, n_layer + 1):
        frac = (il - start) / act
        d = next((i for i, c in enumerate(cumulative) if frac < c), len(free) - 1)
        where[il] = d
    return where


def _per_layer(value: Any, n_layer: int) -> list[int]:
    if isinstance(value, list):
        values = [int(v) for v in value[:n_layer]]
        return values + [values[-1] if values else 0] * (n_layer - len(values))
    return [int(value or 0)] * n_layer


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def describe(p: Plan, shape: ModelShape, settings: EstimateOptions, free: list[int]) -> str:
    """The breakdown in words, for ``xinf estimate`` and the logs."""
    ctx = p.context
    per_slot = kv_cells(ctx)
    lines = [
        f"{shape.architecture}: {shape.n_layer} layers + output, embedding {shape.n_embd}, "
        f"{shape.n_head} heads ({max(shape.n_head_kv)} KV), vocabulary {shape.n_vocab}",
        f"context: n_ctx {ctx.n_ctx} shared by {ctx.n_parallel} slot(s): {per_slot} tokens per request"
        + (" (unified KV)" if ctx.kv_unified else ""),
        f"KV cache: {format_bytes(p.kv_cache)} ({_type_name(settings.type_k)}/{_type_name(settings.type_v)}, "
        f"{format_bytes(p.kv_per_token)} per token)",
        f"compute graph: {format_bytes(p.graph)} per device"
        + (" (flash attention)" if settings.flash_attn else " (no flash attention)"),
    ]
    if free:
        state = "all" if p.gpu_layers == p.total_layers else f"{p.gpu_layers} of"
        lines.append(
            f"{state} {p.total_layers} layers on {len(free)} device(s) with "
            + ", ".join(format_bytes(f) for f in free)
            + f" free; {format_bytes(DEVICE_RESERVE)} reserved per device for the runtime"
        )
    lines.extend(p.notes)
    return "\n".join(lines)


def _type_name(ggml_type: int) -> str:
    return type_info(ggml_type)[0].lower()
