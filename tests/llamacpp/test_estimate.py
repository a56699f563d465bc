"""The memory estimate and the GPU layer choice, on the header shapes of real models.

Expected figures are derived by hand in each test from the model's published
shape (layers, widths, heads, vocabulary) and the quantization block sizes.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llamacpp_models import gemma2_like, llama3_8b, qwen25_05b, smollm2_spec

from xinf.errors import LaunchError
from xinf.gguf import read_header
from xinf.placement import Ledger, plan
from xinf.types import Device, Hardware, MemoryEstimate, ModelSource, ModelSpec
from xinf_llamacpp.plugin import estimate_vram

MiB, GiB = 1 << 20, 1 << 30
RESERVE = 512 * MiB  # per device, for the CUDA runtime


def spec_for(path: Path) -> ModelSpec:
    return ModelSpec(name="shape", format="ggufv2", source=ModelSource(path=str(path)))


def gpus(*sizes: int) -> list[Device]:
    return [Device(index=i, name=f"GPU {i}", total_memory=s, free_memory=s) for i, s in enumerate(sizes)]


def estimate(path: Path, devices: list[Device], **options: object) -> MemoryEstimate:
    result = estimate_vram(spec=spec_for(path), options=dict(options), devices=devices)
    assert result is not None
    return result


# ---------------------------------------------------------------- Llama-3-8B

# Per layer: q, o 4096x4096; k, v 4096x1024; gate, up, down 4096x14336: 218,103,808
# weights at Q4_K (144 bytes per 256) plus two f32 norms of 4096.
L3_LAYER = 218_103_808 // 256 * 144 + 2 * 4096 * 4  # 122,716,160
L3_EMBED = 4096 * 128256 // 256 * 144  # Q4_K, stays on the host
L3_OUTPUT = 4096 * 128256 // 256 * 210 + 4096 * 4  # Q6_K output + f32 norm
L3_KV_LAYER_8K = 8192 * 2 * (8 * 128) * 2  # 8192 cells, K and V, 8 KV heads of 128, f16
L3_GRAPH = 4 * 512 * (2 * 4096 + 4 * 14336) + 2 * 512 * 8192  # one 512-token micro-batch, flash attention
L3_FFN = 4096 * 14336 // 256 * 144  # the largest matrix a host layer has


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = llama3_8b(tmp_path_factory.mktemp("shapes") / "llama3-8b.gguf")
    return path


def test_llama3_8b_f16_kv_cache_at_8192_is_one_gib(llama3: Path) -> None:
    assert estimate(llama3, [], n_ctx=8192, n_parallel=1).kv_cache == GiB
    # n_ctx is shared by the slots: 4 slots of 2048 take the same cache
    assert estimate(llama3, [], n_ctx=8192, n_parallel=4).kv_cache == GiB
    # the default gives each of 4 slots 4096 tokens
    assert estimate(llama3, []).kv_cache == 2 * GiB
    # q8_0 stores 32 values in 34 bytes
    assert estimate(llama3, [], n_ctx=8192, n_parallel=1, cache_type_k="q8_0", cache_type_v="q8_0").kv_cache == (
        GiB // 64 * 34
    )
    # K and V types count separately
    assert estimate(llama3, [], n_ctx=8192, n_parallel=1, cache_type_v="q4_0").kv_cache == GiB // 2 + GiB // 64 * 9


def test_llama3_8b_weights_add_up(llama3: Path) -> None:
    est = estimate(llama3, [], n_ctx=8192, n_parallel=1)
    assert est.weights == 32 * L3_LAYER + L3_EMBED + L3_OUTPUT == 4_653_375_488
    assert est.total_layers == 33
    assert est.total == est.weights + est.kv_cache + est.overhead == est.host  # CPU only: all on the host


def layers_that_fit(free: int) -> int:
    """Hand-derived: the output layer and as many repeating layers (weights + KV) as fit."""
    full = RESERVE + 32 * (L3_LAYER + L3_KV_LAYER_8K) + L3_OUTPUT + L3_GRAPH
    if full <= free:
        return 33
    # partial offload: the device also holds a copy of the largest host matrix for big batches
    fixed = RESERVE + L3_OUTPUT + L3_GRAPH + L3_FFN
    if free < fixed:
        return 0
    return 1 + (free - fixed) // (L3_LAYER + L3_KV_LAYER_8K)


@pytest.mark.parametrize(
    ("free", "layers"),
    [
        (1 * GiB, 0),
        (3 * GiB // 2, 3),
        (2 * GiB, 7),
        (3 * GiB, 14),
        (4 * GiB, 21),
        (5 * GiB, 28),
        (6 * GiB, 33),
        (24 * GiB, 33),
    ],
)
def test_llama3_8b_layer_choice_from_too_small_to_ample(llama3: Path, free: int, layers: int) -> None:
    assert layers_that_fit(free) == layers  # the hand derivation agrees with the table
    est = estimate(llama3, gpus(free), n_ctx=8192, n_parallel=1)
    assert est.gpu_layers == layers
    assert est.total_layers == 33
    if layers:
        assert est.per_device[0] <= free
    if 0 < layers < 33:
        expected = RESERVE + L3_OUTPUT + (layers - 1) * (L3_LAYER + L3_KV_LAYER_8K) + L3_GRAPH + L3_FFN
        assert est.per_device[0] == expected
    if layers == 33:
        assert est.per_device[0] == RESERVE + 32 * (L3_LAYER + L3_KV_LAYER_8K) + L3_OUTPUT + L3_GRAPH
    # what is not on the device stays in host memory: the embedding and the other layers
    on_host = 32 - max(0, layers - 1)
    assert est.host >= L3_EMBED + on_host * L3_LAYER


def test_llama3_8b_more_memory_never_means_fewer_layers(llama3: Path) -> None:
    estimates = [estimate(llama3, gpus(g * GiB // 4), n_ctx=8192, n_parallel=1) for g in range(2, 40)]
    counts = [e.gpu_layers for e in estimates]
    assert counts == sorted(counts)
    assert counts[0] == 0 and counts[-1] == 33
    hosts = [e.host for e in estimates]
    assert hosts == sorted(hosts, reverse=True)


def test_llama3_8b_longer_context_lowers_the_layer_count(llama3: Path) -> None:
    short = estimate(llama3, gpus(6 * GiB), n_ctx=8192, n_parallel=1)
    long = estimate(llama3, gpus(6 * GiB), n_ctx=32768, n_parallel=1)
    assert short.gpu_layers == 33
    assert long.kv_cache == 4 * GiB
    assert long.gpu_layers is not None and 0 < long.gpu_layers < 33


def test_llama3_8b_explicit_layer_count_is_kept(llama3: Path) -> None:
    est = estimate(llama3, gpus(24 * GiB), n_ctx=8192, n_parallel=1, n_gpu_layers=10)
    assert est.gpu_layers == 10
    assert est.per_device[0] == RESERVE + L3_OUTPUT + 9 * (L3_LAYER + L3_KV_LAYER_8K) + L3_GRAPH + L3_FFN
    # even when it does not fit: the user's number stands, with a word about it
    small = estimate(llama3, gpus(2 * GiB), n_ctx=8192, n_parallel=1, n_gpu_layers=33)
    assert small.gpu_layers == 33 and small.per_device[0] > 2 * GiB
    assert "n_gpu_layers=33 was given" in small.note


def test_llama3_8b_splits_across_two_devices_by_free_memory(llama3: Path) -> None:
    est = estimate(llama3, gpus(4 * GiB, 4 * GiB), n_ctx=8192, n_parallel=1)
    assert est.gpu_layers == 33  # 8 GiB in two halves holds what 6 GiB holds on one device
    # llama.cpp gives layers 0-16 to the first device, 17-31 and the output to the second
    assert est.per_device == [
        RESERVE + 17 * (L3_LAYER + L3_KV_LAYER_8K) + L3_GRAPH,
        RESERVE + 15 * (L3_LAYER + L3_KV_LAYER_8K) + L3_OUTPUT + L3_GRAPH,
    ]


def test_scheduler_places_the_chosen_layer_count(llama3: Path) -> None:
    spec = spec_for(llama3)
    options = {"n_ctx": 8192, "n_parallel": 1}
    hardware = Hardware(system="Linux", machine="x86_64", cpu_count=8, memory_total=0, memory_available=0)
    hardware.devices = gpus(5 * GiB)
    placements = plan(
        uid="l3",
        replicas=1,
        hardware=hardware,
        ledger=Ledger(),
        estimate=lambda devices: estimate_vram(spec=spec, options=options, devices=devices),
        n_gpu=None,
        gpu_idx=None,
    )
    assert placements[0].devices == [0]
    assert placements[0].gpu_layers == 28


# ---------------------------------------------------------------- Qwen2.5-0.5B

# Per layer at Q8_0 (34 bytes per 32): q, o 896x896; k, v 896x128; gate, up, down 896x4864;
# plus f32 norms (2 x 896) and q/k/v biases (896 + 128 + 128).
Q_LAYER = (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864) // 32 * 34 + (2 * 896 + 896 + 2 * 128) * 4
Q_EMBED = 896 * 151936 // 32 * 34


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = qwen25_05b(tmp_path_factory.mktemp("shapes") / "qwen2.5-0.5b.gguf")
    return path


def test_qwen25_kv_cache_is_12_kib_per_token(qwen: Path) -> None:
    # 24 layers x (K + V) x 2 KV heads x 64 x 2 bytes = 12 KiB per token
    assert estimate(qwen, [], n_ctx=32768, n_parallel=1).kv_cache == 32768 * 12 * 1024 == 384 * MiB
    assert estimate(qwen, [], n_ctx=4096, n_parallel=1).kv_cache == 48 * MiB


def test_qwen25_tied_output_is_duplicated_onto_the_device(qwen: Path) -> None:
    est = estimate(qwen, gpus(4 * GiB), n_ctx=4096, n_parallel=1)
    assert est.weights == 24 * Q_LAYER + Q_EMBED + 896 * 4
    assert est.gpu_layers == 25
    kv = 48 * MiB
    graph = 4 * 512 * (2 * 896 + 4 * 4864) + 2 * 512 * 4096
    # the device holds every layer, the norm and its own copy of the embedding as the output matrix
    assert est.per_device[0] == RESERVE + 24 * Q_LAYER + kv + 896 * 4 + Q_EMBED + graph
    # the host keeps the input embedding
    assert est.host >= Q_EMBED


def test_qwen25_layer_choice(qwen: Path) -> None:
    ample = estimate(qwen, gpus(2 * GiB), n_ctx=4096, n_parallel=1)
    tight = estimate(qwen, gpus(1 * GiB), n_ctx=4096, n_parallel=1)
    none = estimate(qwen, gpus(600 * MiB), n_ctx=4096, n_parallel=1)
    assert ample.gpu_layers == 25
    assert tight.gpu_layers is not None and 1 <= tight.gpu_layers < 25
    assert tight.per_device[0] <= GiB
    assert none.gpu_layers == 0


# ---------------------------------------------------------------- sliding window, errors


def test_sliding_window_layers_are_sized_to_the_window(tmp_path: Path) -> None:
    path = gemma2_like(tmp_path / "gemma2.gguf")
    per_cell = 2 * (2 * 128) * 2  # K and V, 2 heads of 128, f16 = 1 KiB per layer
    full = 2 * 8192 * per_cell  # layers 1 and 3 attend to the whole context
    window = 2 * (4096 + 512) * per_cell  # layers 0 and 2: the window plus one micro-batch
    assert estimate(path, [], n_ctx=8192, n_parallel=1).kv_cache == full + window
    assert estimate(path, [], n_ctx=8192, n_parallel=1, swa_full=True).kv_cache == 2 * full


def test_failed_estimate_returns_none_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with caplog.at_level(logging.WARNING, logger="xinf_llamacpp"):
        assert estimate_vram(spec=spec_for(broken), options={}, devices=gpus(8 * GiB)) is None
    assert "offloading all layers" in caplog.text and "broken.gguf" in caplog.text


def test_bad_cache_type_fails_the_estimate_with_the_option_named(llama3: Path) -> None:
    with pytest.raises(LaunchError, match="cache_type_k"):
        estimate(llama3, gpus(8 * GiB), cache_type_k="q9")


# ---------------------------------------------------------------- against llama.cpp itself

SMOL_FILE = Path(smollm2_spec().source.path or "")

PROBE = """
import sys, xllamacpp as x
p = x.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx, p.n_parallel = int(sys.argv[2]), int(sys.argv[3])
p.cache_type_k = p.cache_type_v = getattr(x.ggml_type, sys.argv[4])
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
p.warmup = False
p.verbosity = 4  # the buffer sizes are logged at debug level
s = x.Server(p)
import os; os._exit(0)
"""


@pytest.mark.parametrize(
    ("n_ctx", "n_parallel", "cache"),
    [(2048, 1, "GGML_TYPE_F16"), (1000, 3, "GGML_TYPE_F16"), (8192, 4, "GGML_TYPE_Q8_0")],
)
def test_smollm2_estimate_matches_llamacpp_buffers(n_ctx: int, n_parallel: int, cache: str) -> None:
    """llama.cpp prints what it allocates; the estimate for the CPU must agree."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(SMOL_FILE), str(n_ctx), str(n_parallel), cache],
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = out.stdout + out.stderr

    def mib(pattern: str) -> float:
        match = re.search(pattern + r"\s*=\s*([0-9.]+) MiB", log)
        assert match, f"{pattern!r} not in llama.cpp's log:\n{log[-3000:]}"
        return float(match.group(1)) * MiB

    est = estimate(SMOL_FILE, [], n_ctx=n_ctx, n_parallel=n_parallel, cache_type_k=cache, cache_type_v=cache)
    assert abs(est.kv_cache - mib("KV buffer size")) < 0.01 * MiB
    assert abs(est.weights - mib("model buffer size")) < 0.01 * MiB
    compute = mib("compute buffer size") + mib("output buffer size")
    assert 0.9 * compute <= est.overhead <= 1.25 * compute


def test_header_reader_agrees_with_gguf_reader() -> None:
    from gguf import GGUFReader

    ours = read_header(SMOL_FILE)
    theirs = GGUFReader(str(SMOL_FILE))
    assert [(t.name, t.nbytes) for t in ours.tensors] == [(t.name, int(t.n_bytes)) for t in theirs.tensors]
    for key in ("llama.block_count", "llama.embedding_length", "llama.attention.head_count_kv", "general.name"):
        assert ours.get(key) == theirs.fields[key].contents()
