"""The offline test-model generator: real libraries load what it writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import tinymodels

pytest.importorskip("numpy")
pytest.importorskip("tokenizers")

TOOLS = Path(tinymodels.__file__).parent
SENTENCE = "Hello world! The capital of France isn't Rome.  Numbers: 12345,\n\n\ttabs <think>hm</think><|im_end|>"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XINF_MODELS_CACHE", str(tmp_path / "models"))
    return tmp_path / "models"


# ------------------------------------------------------------------------------------------ cache and CLI


def test_ensure_caches_by_parameters(cache: Path) -> None:
    first = tinymodels.ensure("llama-tiny", layers=1)
    assert first.parent == cache and (first / "config.json").is_file()
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert tinymodels.ensure("llama-tiny", layers=1) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt
    other = tinymodels.ensure("llama-tiny", layers=2)
    assert other != first
    assert json.loads((other / "config.json").read_text())["num_hidden_layers"] == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, other.name])  # no temp dirs left


def test_unknown_names_and_parameters_are_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'mistral-tiny'"):
        tinymodels.ensure("mistral-tiny")
    with pytest.raises(ValueError, match="unknown parameters: colour"):
        tinymodels.ensure("qwen3-tiny", colour="red")
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        tinymodels.ensure("qwen3-tiny", vocab_size=10)


def test_concurrent_builds_agree(cache: Path) -> None:
    env = {**os.environ, "XINF_MODELS_CACHE": str(cache)}
    cmd = [sys.executable, str(TOOLS / "tinymodels.py"), "qwen2-tiny", "--layers", "1", "--hidden", "64"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len(paths) == 1
    path = Path(paths.pop())
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 64
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_cli_writes_where_asked(tmp_path: Path) -> None:
    out = tmp_path / "m"
    cmd = [sys.executable, str(TOOLS / "tinymodels.py"), "qwen3-tiny", "--layers", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    )


def test_tokenizer_is_deterministic_across_processes() -> None:
    code = "import sys, tinymodels; sys.stdout.write(tinymodels.train_tokenizer().to_str())"
    env = {**os.environ, "PYTHONPATH": str(TOOLS), "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert tinymodels.train_tokenizer().to_str() == other


def test_presets_have_the_sizes_they_promise() -> None:
    vocab = tinymodels.train_tokenizer().get_vocab_size()
    count = {
        name: sum(math.prod(dims) for _, dims in tinymodels.tensor_shapes("llama", shape, vocab))
        for name, shape in tinymodels.PRESETS.items()
    }
    assert 1e6 < count["tiny"] < 6e6
    assert 90e6 < count["100m"] < 110e6
    # Q8_0 stores 32 weights in 34 bytes
    assert 140e6 < count["150mb"] * 34 / 32 < 160e6


def test_vocab_padding_keeps_special_tokens_last() -> None:
    tok = tinymodels.train_tokenizer(2048)
    assert tok.get_vocab_size() == 2048
    assert tok.token_to_id("</think>") == 2047 and tok.token_to_id("<|endoftext|>") == 2043
    assert tok.decode([2000]).startswith("<unused")


# ------------------------------------------------------------------------------------------ transformers


@pytest.mark.parametrize("arch", tinymodels.ARCHS)
def test_transformers_loads_and_generates(arch: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    path = tinymodels.ensure(f"{arch}-tiny")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    # transformers rebuilds qwen tokenizers with its own pipeline: the ids must still be ours
    assert tokenizer(SENTENCE)["input_ids"] == Tokenizer.from_file(str(path / "tokenizer.json")).encode(SENTENCE).ids
    assert tokenizer.decode(tokenizer(SENTENCE)["input_ids"]) == SENTENCE
    assert tokenizer.eos_token == "<|im_end|>"

    torch.set_num_threads(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.bfloat16
    config = json.loads((path / "config.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == config["xinf_tinymodels"]["parameters"]
    # the bf16 bits were written right: norms are exactly 1, matrices look like N(0, 0.02)
    state = model.state_dict()
    assert torch.equal(state["model.norm.weight"], torch.ones(config["hidden_size"], dtype=torch.bfloat16))
    assert 0.018 < state["model.layers.0.mlp.up_proj.weight"].float().std().item() < 0.022

    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6


def test_qwen3_template_honours_enable_thinking() -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tinymodels.ensure("qwen3-tiny"))
    start = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

    def render(**kwargs: object) -> str:
        return tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True, **kwargs)

    assert render(enable_thinking=False) == start + "<think>\n\n</think>\n\n"
    assert render(enable_thinking=True) == start
    assert render() == start
    # earlier assistant turns lose their reasoning, as in Qwen3
    history = [*QUESTION, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nParis."}, *QUESTION]
    rendered = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant\nParis.<|im_end|>" in rendered and "hmm" not in rendered
    ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, enable_thinking=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<think>") in ids


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_chatml_template(arch: str) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tinymodels.ensure(f"{arch}-tiny"))
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


# ------------------------------------------------------------------------------------------ GGUF


@pytest.mark.parametrize("ftype", ["f16", "q8_0"])
def test_gguf_header_reads_back(ftype: str, cache: Path) -> None:
    gguf = pytest.importorskip("gguf")
    shape = tinymodels.PRESETS["tiny"]
    path = tinymodels.ensure("gguf-tiny", ftype=ftype, layers=2)
    reader = gguf.GGUFReader(path)

    def field(name: str) -> object:
        return reader.fields[name].contents()

    vocab = tinymodels.train_tokenizer().get_vocab_size()
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == 2
    assert field("llama.embedding_length") == shape.hidden
    assert field("llama.attention.head_count_kv") == shape.kv_heads
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "qwen2"
    assert len(field("tokenizer.ggml.tokens")) == vocab  # type: ignore[arg-type]
    assert "<|im_start|>" in field("tokenizer.chat_template")  # type: ignore[operator]
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 2 * 9 + 1
    want = gguf.GGMLQuantizationType.F16 if ftype == "f16" else gguf.GGMLQuantizationType.Q8_0
    # GGUF lists dimensions innermost first
    assert list(tensors["token_embd.weight"].shape) == [shape.hidden, vocab]
    assert tensors["token_embd.weight"].tensor_type == want
    assert list(tensors["blk.1.attn_k.weight"].shape) == [shape.hidden, shape.kv_heads * shape.dim]
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [shape.intermediate, shape.hidden]
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_xllamacpp_loads_generates_and_tokenizes_alike() -> None:
    xlc = pytest.importorskip("xllamacpp")
    path = tinymodels.ensure("gguf-tiny")
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 256
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    server = xlc.Server(params)
    try:
        reply = server.handle_chat_completions(
            {"messages": QUESTION, "max_tokens": 5, "temperature": 0, "ignore_eos": True}
        )
        assert reply["usage"]["completion_tokens"] == 5
        assert reply["choices"][0]["finish_reason"] == "length"
        # llama.cpp's own tokenizer (the "qwen2" pre-tokenizer) gives the ids ours gives
        body = json.dumps({"content": SENTENCE, "parse_special": True}).encode()
        request = urllib.request.Request(
            f"{server.listening_address}/tokenize", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            ids = json.load(response)["tokens"]
        assert ids == tinymodels.train_tokenizer().encode(SENTENCE).ids
        chat = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        assert reply["usage"]["prompt_tokens"] == len(tinymodels.train_tokenizer().encode(chat).ids)
    finally:
        del server


@pytest.mark.parametrize(("preset", "low", "high"), [("1b", 1.2e9, 1.3e9), ("3b", 3.1e9, 3.3e9)])
def test_gpu_presets_have_llama32_sizes(preset: str, low: float, high: float) -> None:
    """The GPU checks' shapes (Llama-3.2-1B/3B): counted, never built here (gigabytes)."""
    shape = tinymodels.PRESETS[preset]
    vocab = shape.vocab_size or 0
    count = sum(math.prod(dims) for _, dims in tinymodels.tensor_shapes("llama", shape, vocab))
    assert low < count < high
    assert shape.tie_embeddings and shape.context == 131072


def test_embedding_model_is_served_as_embeddings(cache: Path) -> None:
    from xinf.localmodel import spec_from_path

    path = tinymodels.ensure("embed-tiny")
    spec = spec_from_path(str(path), None, None, None)
    assert spec.model_type == "embedding" and spec.abilities == ["embed"]
    modules = json.loads((path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((path / "1_Pooling" / "config.json").read_text())["pooling_mode_lasttoken"] is True
