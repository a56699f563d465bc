"""The built-in catalogue is well formed, and `xinf catalog import` reads Xinference's own catalogue files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import msgspec
import pytest

from xinf.prompts import render_chat
from xinf.registry import Family, Registry
from xinf.testing.server import ServerProcess
from xinf.types import ABILITIES, FORMATS, GenerateRequest, ModelSpec

FILES = {"LLM": "llm.json", "embedding": "embedding.json", "rerank": "rerank.json"}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.{}-]+$")
GENERIC_GGUF_NAMES = ("ggml-model-",)  # repositories that name their files generically


def entries() -> list[tuple[str, dict]]:
    out = []
    for model_type, name in FILES.items():
        data = json.loads(resources.files("xinf.families").joinpath(name).read_bytes())
        out.extend((model_type, e) for e in data)
    return out


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_the_catalogue_has_the_families_people_launch() -> None:
    names = {model_type: {e["name"] for t, e in entries() if t == model_type} for model_type in FILES}
    assert len(names["LLM"] - {"xinf-test-chat", "xinf-test-reasoning"}) >= 40
    for wanted in ("Qwen3-Instruct", "Qwen3-Thinking", "qwen3", "qwen2.5-instruct", "qwen2.5-coder-instruct",
                   "qwen2.5-vl-instruct", "QwQ-32B", "deepseek-r1-distill-qwen", "deepseek-r1-distill-llama",
                   "llama-3.1-instruct", "llama-3.2-vision-instruct", "llama-3.3-instruct", "gemma-3-it",
                   "mistral-instruct-v0.3", "mistral-small-instruct", "phi-4", "glm4-0414", "minicpm4",
                   "internlm3-instruct", "gpt-oss", "smollm2-instruct"):  # fmt: skip
        assert wanted in names["LLM"], wanted
    for wanted in ("bge-m3", "bge-large-en-v1.5", "bge-large-zh-v1.5", "gte-large", "e5-large-v2",
                   "jina-embeddings-v3", "Qwen3-Embedding-0.6B"):  # fmt: skip
        assert wanted in names["embedding"], wanted
    for wanted in ("bge-reranker-v2-m3", "bge-reranker-large", "Qwen3-Reranker-0.6B"):
        assert wanted in names["rerank"], wanted


@pytest.mark.parametrize(("model_type", "entry"), entries(), ids=lambda v: v["name"] if isinstance(v, dict) else v)
def test_every_builtin_entry(model_type: str, entry: dict) -> None:
    # Schema: the registry's own type (rerank entries wait for the rerank model type to load them).
    family = msgspec.convert({**entry, "model_type": "LLM" if model_type == "rerank" else model_type}, Family)
    assert set(family.abilities) <= set(ABILITIES) | {"rerank"}, family.abilities
    assert bool(family.reasoning_start_tag) == bool(family.reasoning_end_tag)
    if "reasoning" in family.abilities and not family.name.startswith("xinf-test"):
        assert family.reasoning_end_tag, "a reasoning model names its tags"
    if not family.name.startswith("xinf-test"):
        assert family.checked, "every fact is checked somewhere"
        assert family.context_length
    for spec in family.specs:
        assert spec.format in (*FORMATS, "test"), spec.format
        assert spec.quantizations and len(set(spec.quantizations)) == len(spec.quantizations)
        for hub in ("huggingface", "modelscope", "csghub"):
            repo = getattr(spec, hub)
            assert repo is None or HUB_ID.match(repo), (hub, repo)
            if repo and "{quantization}" in repo:
                assert len(spec.quantizations) >= 1
        if spec.format == "ggufv2":
            assert spec.file or spec.path or spec.package, "a GGUF spec names its file"
            if spec.file and "{quantization}" not in spec.file:
                assert len(spec.quantizations) == 1 and norm(spec.quantizations[0]) in norm(spec.file)
            repo = spec.huggingface or spec.modelscope
            if repo and spec.file and not spec.file.startswith(GENERIC_GGUF_NAMES):
                stem = spec.file.split("{quantization}")[0].rsplit("/", 1)[-1]
                assert norm(stem) in norm(repo), f"{spec.file} is not a file of {repo}"
        else:
            assert not spec.file_split
        if spec.quantization_parts:
            assert spec.file_split and "{part}" in spec.file_split
            assert set(spec.quantization_parts) <= set(spec.quantizations)
        if spec.format == "pytorch":
            assert spec.quantizations == ["none"] or all(q in ("none", "4-bit", "8-bit") for q in spec.quantizations)


def test_names_are_unique_and_load() -> None:
    names = [e["name"].lower() for _, e in entries()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    registry = Registry(None)
    assert registry.get("Qwen3-Thinking").reasoning_end_tag == "</think>"
    assert registry.get("Qwen3-Instruct").tool_parser == "qwen"
    assert registry.get("bge-m3").model_type == "embedding" and registry.get("bge-m3").dimensions == 1024
    assert all(f.chat_template is None for f in registry.list_families(builtin=True)), "the model's own template stays"
    assert "<|im_start|>" in (registry.get("Qwen3-Instruct").fallback_chat_template or "")


class Tokenizer:
    """What render_chat asks of a Hugging Face tokenizer; its own template, if any, answers "own"."""

    def __init__(self, template: str | None):
        self.chat_template = template

    def apply_chat_template(self, messages: list, chat_template: str | None = None, **kwargs: object) -> str:
        return chat_template or "own"


def test_the_catalogue_template_is_used_only_when_the_model_has_none() -> None:
    request = GenerateRequest(messages=[{"role": "user", "content": "hi"}])
    catalogue = ModelSpec(name="m", format="pytorch", fallback_chat_template="catalogue")
    assert render_chat(Tokenizer("{{ own }}"), catalogue, request) == "own"
    assert render_chat(Tokenizer(None), catalogue, request) == "catalogue"
    asked = ModelSpec(name="m", format="pytorch", chat_template="registered", fallback_chat_template="catalogue")
    assert render_chat(Tokenizer("{{ own }}"), asked, request) == "registered"


XINFERENCE_LLM = [
    {
        "version": 2,
        "context_length": 32768,
        "model_name": "qwen2.5-instruct-imported",
        "model_lang": ["en", "zh"],
        "model_ability": ["chat", "tools"],
        "model_description": "Qwen2.5 as Xinference lists it.",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_5",
                "model_src": {
                    "huggingface": {"quantizations": ["none"], "model_id": "Qwen/Qwen2.5-0.5B-Instruct"},
                    "modelscope": {"quantizations": ["none"], "model_id": "qwen/Qwen2.5-0.5B-Instruct"},
                },
            }
        ],
        "chat_template": "{{ messages }}",
        "stop": ["<|im_end|>"],
        "tool_parser": "qwen",
        "model_type": "qwen2",
    },
    {"model_name": "qwen2.5-omni-imported", "model_ability": ["chat", "omni"], "model_specs": []},
    {
        "version": 2,
        "model_name": "hub-elsewhere",
        "model_ability": ["chat"],
        "model_specs": [
            {"model_format": "pytorch", "model_src": {"openmind_hub": {"quantizations": ["none"], "model_id": "a/b"}}}
        ],
    },
    {
        "version": 2,
        "model_name": "qwen3",
        "model_ability": ["chat"],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_src": {"huggingface": {"quantizations": ["none"], "model_id": "Qwen/Qwen3-8B"}},
            }
        ],
    },
]
XINFERENCE_RERANK = [
    {
        "version": 2,
        "model_name": "bge-reranker-imported",
        "type": "normal",
        "language": ["en", "zh"],
        "max_tokens": 512,
        "model_specs": [
            {"model_format": "pytorch", "model_src": {"huggingface": {"model_id": "BAAI/bge-reranker-base"}}}
        ],
    }
]
XINFERENCE_EMBEDDING = [
    {
        "version": 2,
        "model_name": "bge-small-imported",
        "dimensions": 384,
        "max_tokens": 512,
        "language": ["en"],
        "model_specs": [
            {"model_format": "pytorch", "model_src": {"huggingface": {"model_id": "BAAI/bge-small-en-v1.5"}}}
        ],
    }
]


def xinf(*args: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args, "-e", endpoint], capture_output=True, text=True, timeout=120
    )


def test_catalog_import_of_xinference_files(tmp_path: Path) -> None:
    tree = tmp_path / "xinference" / "model"
    for kind, name, data in (
        ("llm", "llm_family.json", XINFERENCE_LLM),
        ("rerank", "model_spec.json", XINFERENCE_RERANK),
        ("embedding", "model_spec.json", XINFERENCE_EMBEDDING),
    ):
        (tree / kind).mkdir(parents=True)
        (tree / kind / name).write_text(json.dumps(data))
    with ServerProcess(tmp_path / "home") as server:
        done = xinf("catalog", "import", str(tmp_path / "xinference"), endpoint=server.url)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert any(line.startswith("skipped qwen2.5-omni-imported:") and "omni" in line for line in lines)
        assert any(line.startswith("skipped hub-elsewhere:") and "Hugging Face" in line for line in lines)
        assert any(line.startswith("skipped qwen3:") and "built-in" in line for line in lines)
        got = server.http.get("/v1/model_registrations/LLM/qwen2.5-instruct-imported").json()
        assert got["specs"] == [
            {
                "format": "pytorch",
                "size_in_billions": 0.5,
                "quantizations": ["none"],
                "huggingface": "Qwen/Qwen2.5-0.5B-Instruct",
                "modelscope": "qwen/Qwen2.5-0.5B-Instruct",
            }
        ]
        assert got["tool_parser"] == "qwen" and got.get("chat_template") is None  # the model's own template stays
        assert got["fallback_chat_template"] == "{{ messages }}"  # unless it has none
        embedding = server.http.get("/v1/model_registrations/embedding/bge-small-imported").json()
        assert embedding["dimensions"] == 384 and embedding["abilities"] == ["embed"]
        rerank_line = next(line for line in lines if "bge-reranker-imported" in line)
        served = {t for t in ("rerank",) if server.http.get(f"/v1/model_registrations/{t}").json()}
        assert rerank_line.startswith("skipped") or "rerank" in served
        assert lines[-1].startswith("imported 2 model(s)") or lines[-1].startswith("imported 3 model(s)")
        # Persisted: a restart keeps them.
    with ServerProcess(tmp_path / "home") as server:
        listed = xinf("registrations", "--all", "--search", "imported", endpoint=server.url)
        assert "qwen2.5-instruct-imported" in listed.stdout and "bge-small-imported" in listed.stdout
        reasoning = xinf("registrations", "--all", "-t", "LLM", "--ability", "reasoning", "--json", endpoint=server.url)
        names = {m["model_name"] for m in json.loads(reasoning.stdout)}
        assert {"qwen3", "Qwen3-Thinking", "QwQ-32B"} <= names and "qwen2.5-instruct" not in names
