"""PEFT LoRA adapters on the transformers engine behind a real `xinf serve`.

The adapters come from ``tools/tinymodels_lora.py``; the reference is the same
tiny model with the adapter merged into its weights by peft in this test, and
everything runs in float32 so that greedy outputs agree exactly.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft")

import tinymodels_lora as tl

from xinf.testing.server import ServerProcess

OPTIONS = {"model_engine": "transformers", "dtype": "float32", "threads": 1, "max_num_seqs": 8}
PROMPT = "Hello world, the capital"


def merged_model(base: Path, adapter: Path, out: Path) -> Path:
    """``base`` with ``adapter`` merged into its weights, by peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 for a deprecated property
        warnings.simplefilter("ignore", FutureWarning)
        PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(base / name, out / name)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, qwen3_path: Path) -> Iterator[ServerProcess]:
    shout, calm = tl.peft_adapter("qwen3-tiny"), tl.peft_adapter("qwen3-tiny", seed=2, targets=("k_proj", "up_proj"))
    merged = merged_model(qwen3_path, shout, tmp_path_factory.mktemp("merged"))
    with ServerProcess(tmp_path_factory.mktemp("transformers-lora")) as server:
        loras = [{"lora_name": "shout", "local_path": str(shout)}, {"lora_name": "calm", "local_path": str(calm)}]
        launches = [
            {"model_path": str(qwen3_path), "model_uid": "tiny", "peft_model_config": {"lora_list": loras}},
            {"model_path": str(merged), "model_uid": "merged"},
        ]
        with ThreadPoolExecutor(2) as pool:  # the two replicas start side by side
            list(pool.map(lambda body: server.launch(**body, **OPTIONS), launches))
        yield server


def complete(server: ServerProcess, model: str, prompt: str = PROMPT, **extra: Any) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 10, "temperature": 0, **extra}
    response = server.http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_adapter_output_equals_the_merged_model_and_differs_from_the_base(server: ServerProcess) -> None:
    base, merged = complete(server, "tiny"), complete(server, "merged")
    assert base != merged
    assert complete(server, "shout") == merged
    assert complete(server, "tiny", lora_name="shout") == merged
    assert complete(server, "calm") not in (base, merged)
    assert complete(server, "tiny") == base


def test_chat_with_each_adapter(server: ServerProcess) -> None:
    client = server.openai()
    messages = [{"role": "user", "content": "Tell me about Paris."}]

    def chat(model: str) -> str:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        return str(reply.choices[0].message.content)

    assert chat("tiny:shout") == chat("merged") != chat("tiny")


def test_base_and_adapter_requests_interleaved_on_one_replica(server: ServerProcess) -> None:
    prompts = [f"{PROMPT} number {i}" for i in range(2)]
    models = ("tiny", "shout", "calm")
    expected = {(p, m): complete(server, m, p) for p in prompts for m in models}
    jobs = [(p, m) for p in prompts for m in models] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: complete(server, job[1], job[0]), jobs))
    assert results == [expected[job] for job in jobs]
    model = server.http.get("/v1/models/tiny").json()
    assert len(model["replicas"]) == 1 and [a["name"] for a in model["adapters"]] == ["shout", "calm"]


def test_an_adapter_for_another_model_fails_the_launch_naming_it(server: ServerProcess, qwen3_path: Path) -> None:
    wrong = tl.peft_adapter("qwen3-tiny", hidden=128)
    response = server.http.post(
        "/v1/models",
        json={
            "model_path": str(qwen3_path),
            "model_uid": "wrong",
            "peft_model_config": {"lora_list": [{"lora_name": "narrow", "local_path": str(wrong)}]},
            **OPTIONS,
        },
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'narrow'" in message and "does not fit" in message and "model.layers.0.mlp.down_proj is 256x512" in message


def test_a_gguf_adapter_is_refused_by_transformers_with_the_reason(server: ServerProcess, qwen3_path: Path) -> None:
    response = server.http.post(
        "/v1/models",
        json={
            "model_path": str(qwen3_path),
            "model_uid": "gguf-lora",
            "model_engine": "transformers",
            "peft_model_config": {"lora_list": [{"lora_name": "g", "local_path": str(tl.gguf_adapter())}]},
        },
    )
    assert response.status_code == 400
    assert "PEFT adapter directories" in response.json()["error"]["message"]


def test_memory_estimate_counts_the_adapters(server: ServerProcess, qwen3_path: Path) -> None:
    def weights(**extra: Any) -> int:
        body = {"model_path": str(qwen3_path), "model_uid": "plan", **OPTIONS, **extra}
        response = server.http.post("/v1/models", params={"dry_run": "true"}, json=body)
        assert response.status_code == 200, response.text
        return int(response.json()["replicas"][0]["estimate"]["weights"])

    adapter = tl.peft_adapter("qwen3-tiny")
    with_adapter = weights(peft_model_config={"lora_list": [{"lora_name": "a", "local_path": str(adapter)}]})
    tensors = tl.lora_weights(tl._shape({}), 4, tl.TARGETS, 1)
    assert with_adapter - weights() == sum(a.nbytes + b.nbytes for a, b in tensors.values())


def test_adding_and_removing_an_adapter_on_the_running_model(server: ServerProcess) -> None:
    merged = complete(server, "merged")
    again = {"lora_name": "again", "local_path": str(tl.peft_adapter("qwen3-tiny"))}
    response = server.http.post("/v1/models/tiny/adapters", json=again)
    assert response.status_code == 200, response.text
    assert complete(server, "again") == merged
    assert server.http.get("/v1/models").json()["data"][-1]["id"] == "again"
    assert server.http.post("/v1/models/tiny/adapters", json=again).status_code == 409

    wrong = {"lora_name": "narrow", "local_path": str(tl.peft_adapter("qwen3-tiny", hidden=128))}
    response = server.http.post("/v1/models/tiny/adapters", json=wrong)
    assert response.status_code == 400 and "does not fit" in response.json()["error"]["message"]

    assert server.http.delete("/v1/models/tiny/adapters/again").status_code == 200
    response = server.http.post("/v1/completions", json={"model": "again", "prompt": "hi", "max_tokens": 2})
    assert response.status_code == 404
    assert server.http.delete("/v1/models/tiny/adapters/again").status_code == 404
    assert complete(server, "shout") == merged  # the others are untouched
    assert [a["name"] for a in server.http.get("/v1/models/tiny").json()["adapters"]] == ["shout", "calm"]
