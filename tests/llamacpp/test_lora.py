"""GGUF LoRA adapters on llama.cpp behind a real `xinf serve`.

The adapter and the reference (the same model with the adapter merged into its
weights) are built by ``tools/tinymodels_lora.py``; both are F32, so greedy
outputs must match exactly.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tinymodels_lora as tl

from xinf.testing.server import ServerProcess

SMALL = {"n_ctx": 1024, "n_parallel": 4, "n_threads": 1}
PROMPT = "Hello world, the capital"


@pytest.fixture(scope="module")
def adapter() -> Path:
    return tl.gguf_adapter()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, adapter: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("llamacpp-lora")) as server:
        server.launch(
            model_path=str(tl.gguf_base()),
            model_uid="tiny",
            model_engine="llama.cpp",
            peft_model_config={"lora_list": [{"lora_name": "shout", "local_path": str(adapter)}]},
            **SMALL,
        )
        server.launch(model_path=str(tl.gguf_merged()), model_uid="merged", model_engine="llama.cpp", **SMALL)
        yield server


def complete(server: ServerProcess, model: str, prompt: str = PROMPT, **extra: Any) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, **extra}
    response = server.http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_models_list_the_adapter_as_its_own_entry(server: ServerProcess, adapter: Path) -> None:
    data = {m["id"]: m for m in server.http.get("/v1/models").json()["data"]}
    assert data["shout"]["parent"] == "tiny"
    assert data["shout"]["root"] == str(adapter)
    assert data["tiny"]["adapters"] == [{"name": "shout", "path": str(adapter), "scale": 1.0}]
    assert "parent" not in data["tiny"]


def test_adapter_output_equals_the_merged_model_and_differs_from_the_base(server: ServerProcess) -> None:
    base, merged = complete(server, "tiny"), complete(server, "merged")
    assert base != merged
    assert complete(server, "shout") == merged
    assert complete(server, "tiny:shout") == merged
    assert complete(server, "tiny", lora_name="shout") == merged
    assert complete(server, "tiny") == base  # the adapter is off again for the base model


def test_chat_with_the_adapter_through_the_openai_client(server: ServerProcess) -> None:
    client = server.openai()
    messages = [{"role": "user", "content": "Tell me about Paris."}]
    with_adapter = client.chat.completions.create(model="shout", messages=messages, max_tokens=10, temperature=0)
    merged = client.chat.completions.create(model="merged", messages=messages, max_tokens=10, temperature=0)
    base = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    assert with_adapter.choices[0].message.content == merged.choices[0].message.content
    assert with_adapter.choices[0].message.content != base.choices[0].message.content
    assert with_adapter.model == "shout"


def test_base_and_adapter_requests_interleaved_on_one_replica(server: ServerProcess) -> None:
    prompts = [f"{PROMPT} number {i}" for i in range(3)]
    expected = {
        (p, m): complete(server, m if m != "shout" else "merged", p) for p in prompts for m in ("tiny", "shout")
    }
    jobs = [(p, m) for p in prompts for m in ("tiny", "shout")] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: complete(server, job[1], job[0]), jobs))
    assert results == [expected[job] for job in jobs]


def test_unknown_adapter_is_a_404_naming_the_adapters(server: ServerProcess) -> None:
    response = server.http.post("/v1/completions", json={"model": "tiny:whisper", "prompt": "hi", "max_tokens": 2})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "model" and error["code"] == "adapter_not_found"
    assert "whisper" in error["message"] and "shout" in error["message"]
    response = server.http.post(
        "/v1/completions", json={"model": "merged", "prompt": "hi", "max_tokens": 2, "lora_name": "shout"}
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "lora_name"


def test_an_adapter_for_another_model_fails_the_launch_naming_it(server: ServerProcess) -> None:
    wrong = tl.gguf_adapter(hidden=128)  # made for a narrower model
    response = server.http.post(
        "/v1/models",
        json={
            "model_path": str(tl.gguf_base()),
            "model_uid": "wrong",
            "model_engine": "llama.cpp",
            "peft_model_config": {"lora_list": [{"lora_name": "narrow", "local_path": str(wrong)}]},
            **SMALL,
        },
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'narrow'" in message and "does not fit" in message and "blk.0.attn_q.weight" in message
    assert "wrong" not in {m["id"] for m in server.http.get("/v1/models").json()["data"]}


def test_a_peft_directory_is_refused_by_llamacpp_with_the_reason(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    response = server.http.post(
        "/v1/models",
        json={
            "model_path": str(tl.gguf_base()),
            "model_uid": "peft",
            "model_engine": "llama.cpp",
            "peft_model_config": {"lora_list": [{"lora_name": "hf", "local_path": str(tmp_path)}]},
        },
    )
    assert response.status_code == 400
    assert "GGUF" in response.json()["error"]["message"] and "'hf'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"lora_list": [{"lora_name": "x"}]}, "local_path"),
        ({"lora_list": [{"lora_name": "x", "local_path": "/no/such/adapter.gguf"}]}, "does not exist"),
        ({"lora_list": [{"lora_name": "bad name", "local_path": "/tmp"}]}, "lora_name"),
        ({"lora_list": "x"}, "lora_list"),
        ({"loras": []}, "unknown peft_model_config field"),
        ({"image_lora_load_kwargs": {"a": 1}}, "image models"),
    ],
)
def test_bad_peft_model_config_is_a_400(server: ServerProcess, config: dict[str, Any], words: str) -> None:
    response = server.http.post(
        "/v1/models", json={"model_path": str(tl.gguf_base()), "model_uid": "bad", "peft_model_config": config}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "peft_model_config" and words in error["message"]


def test_memory_estimate_counts_the_adapter(server: ServerProcess, adapter: Path) -> None:
    def weights(**extra: Any) -> int:
        body = {"model_path": str(tl.gguf_base()), "model_uid": "plan", "model_engine": "llama.cpp", **extra}
        response = server.http.post("/v1/models", params={"dry_run": "true"}, json=body)
        assert response.status_code == 200, response.text
        return int(response.json()["replicas"][0]["estimate"]["weights"])

    with_adapter = weights(peft_model_config={"lora_list": [{"lora_name": "a", "local_path": str(adapter)}]})
    tensors = tl.lora_weights(tl._shape({}), 4, tl.TARGETS, 1)
    assert with_adapter - weights() == sum(a.nbytes + b.nbytes for a, b in tensors.values())


def test_cli_lora_with_a_scale_and_the_xinference_client(server: ServerProcess, adapter: Path) -> None:
    xinference_client = pytest.importorskip("xinference_client")
    cli = [sys.executable, "-m", "xinf.cli.main", "launch", "-e", server.url, "--model-path", str(tl.gguf_base())]
    options = ["--n_ctx", "512", "--n_parallel", "1", "--n_threads", "1"]
    done = subprocess.run(
        [*cli, "-u", "half", "--model-engine", "llama.cpp", "--lora", f"soft={adapter}:0.5", *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    half = server.launch(model_path=str(tl.gguf_merged(scale=0.5)), model_uid="half-merged", **SMALL)
    assert complete(server, "soft") == complete(server, half) != complete(server, "merged")
    listing = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "list", "-e", server.url], capture_output=True, text=True, timeout=60
    )
    assert "soft" in listing.stdout and str(adapter) in listing.stdout

    client = xinference_client.RESTfulClient(server.url)
    uid = client.launch_model(
        model_name="tiny-client",
        model_path=str(tl.gguf_base()),
        model_engine="llama.cpp",
        peft_model_config={"lora_list": [{"lora_name": "client-lora", "local_path": str(adapter)}]},
        n_ctx=512,
        n_parallel=1,
        n_threads=1,
    )
    messages = [{"role": "user", "content": "hello"}]
    config = {"max_tokens": 8, "temperature": 0}
    reply = client.get_model(uid).chat(messages=messages, generate_config={**config, "lora_name": "client-lora"})
    merged = client.get_model("merged").chat(messages=messages, generate_config=config)
    assert reply["choices"][0]["message"]["content"] == merged["choices"][0]["message"]["content"]
    for name in ("half", "half-merged", uid):
        client.terminate_model(name)


def test_adding_an_adapter_to_a_running_model_says_llamacpp_cannot(server: ServerProcess, adapter: Path) -> None:
    response = server.http.post("/v1/models/tiny/adapters", json={"lora_name": "more", "local_path": str(adapter)})
    assert response.status_code == 400
    assert "cannot add or remove LoRA adapters on a running model" in response.json()["error"]["message"]
    assert [a["name"] for a in server.http.get("/v1/models/tiny").json()["adapters"]] == ["shout"]
