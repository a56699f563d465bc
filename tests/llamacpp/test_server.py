"""SmolLM2-135M on llama.cpp behind a real `xinf serve`, driven with the real openai client.

One server per module (loading is cheap, but a server start is not); every
model runs 1 thread per replica and a small context, for a shared 2-core box.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from xinf.testing.server import ServerProcess

SMALL = {"n_ctx": 1024, "n_parallel": 2, "n_threads": 1}  # 512 tokens per request
PARIS = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("llamacpp-server")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    client = server.openai()
    yield client
    client.close()  # its pooled connections would otherwise be left to the garbage collector


@pytest.fixture(scope="module")
def smol(server: ServerProcess) -> str:
    """SmolLM2 launched through POST /v1/models with 2 replicas."""
    return server.launch(model_name="smollm2-instruct", model_uid="smol", replica=2, **SMALL)


def test_launch_reports_two_ready_replicas_on_llamacpp(server: ServerProcess, smol: str) -> None:
    model = server.http.get(f"/v1/models/{smol}").json()
    assert model["model_engine"] == "llama.cpp"
    assert model["model_format"] == "ggufv2"
    assert [r["status"] for r in model["replicas"]] == ["ready", "ready"]


def replica_env(server: ServerProcess, uid: str, name: str) -> list[str | None]:
    """``name`` in each replica process's environment, as it started (/proc)."""
    values: list[str | None] = []
    for replica in server.http.get(f"/v1/models/{uid}").json()["replicas"]:
        entries = Path(f"/proc/{replica['pid']}/environ").read_bytes().split(b"\0")
        found = [e.split(b"=", 1)[1].decode() for e in entries if e.startswith(name.encode() + b"=")]
        values.append(found[0] if found else None)
    return values


def test_replicas_start_with_the_plugins_variables_unless_the_launch_sets_them(
    server: ServerProcess, smol: str
) -> None:
    expected = os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # the server's own value wins
    assert replica_env(server, smol, "GLIBC_TUNABLES") == [expected, expected]
    uid = server.launch(model_name="smollm2-instruct", model_uid="own-tunables", envs={"GLIBC_TUNABLES": ""}, **SMALL)
    try:
        assert replica_env(server, uid, "GLIBC_TUNABLES") == [""]
    finally:
        server.http.delete(f"/v1/models/{uid}").raise_for_status()


def test_chat_knows_the_capital_of_france(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    reply = client.chat.completions.create(model=smol, messages=PARIS, max_tokens=20, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 10
    assert 1 <= reply.usage.completion_tokens < 20


def test_both_replicas_answer_concurrent_requests(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> str:
        reply = client.chat.completions.create(model=smol, messages=PARIS, max_tokens=20, temperature=0)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all("Paris" in a for a in answers)


def test_completion_continues_the_prompt(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    reply = client.completions.create(model=smol, prompt="The capital of France is", max_tokens=3, temperature=0)
    assert reply.object == "text_completion"
    assert "Paris" in reply.choices[0].text
    assert reply.usage.prompt_tokens == 5
    assert reply.usage.completion_tokens == 3
    assert reply.choices[0].finish_reason == "length"


def test_stream_delivers_text_then_finish_and_usage(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=smol,
            messages=PARIS,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert "Paris" in text
    assert len([c for c in with_choices if c.choices[0].delta.content]) >= 2  # token by token, not one blob
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 2


def test_max_tokens_cuts_with_length(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    reply = client.chat.completions.create(
        model=smol,
        messages=[{"role": "user", "content": "Write a long story about the sea."}],
        max_tokens=7,
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 7


def test_stop_string_is_not_emitted(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    prompt = "1, 2, 3, 4, 5,"
    full = client.completions.create(model=smol, prompt=prompt, max_tokens=12, temperature=0)
    assert " 7," in full.choices[0].text
    cut = client.completions.create(model=smol, prompt=prompt, max_tokens=12, temperature=0, stop=[" 7"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full.choices[0].text.split(" 7")[0]


def test_logprobs_come_from_llamacpp(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    reply = client.chat.completions.create(
        model=smol, messages=PARIS, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 2
        # greedy decoding picks the most likely token
        assert item.token == max(item.top_logprobs, key=lambda t: t.logprob).token


def test_prompt_over_the_context_is_400_naming_the_size(
    server: ServerProcess, client: openai.OpenAI, smol: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=smol, messages=[{"role": "user", "content": "hello " * 2000}], max_tokens=4
        )
    assert info.value.status_code == 400
    error = info.value.body
    assert error["code"] == "context_length_exceeded"
    assert "512 tokens per request" in error["message"]
    # the model still serves afterwards
    reply = client.chat.completions.create(model=smol, messages=PARIS, max_tokens=3)
    assert reply.choices[0].message.content


def test_unknown_option_fails_the_launch_naming_the_closest(server: ServerProcess) -> None:
    response = server.http.post(
        "/v1/models", json={"model_name": "smollm2-instruct", "model_uid": "bad", "n_ctxx": 512, "n_threads": 1}
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "n_ctxx" in message and "n_ctx" in message.replace("n_ctxx", "")


def test_launch_through_the_cli_with_nested_options(
    server: ServerProcess, client: openai.OpenAI, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "xinf.cli.main",
        "launch",
        "-n",
        "smollm2-instruct",
        "-u",
        "smol-cli",
        "-e",
        server.url,
        "--n_ctx",
        "512",
        "--n_parallel",
        "1",
        "--n_threads",
        "1",
        "--sampling.top_k",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "smol-cli is ready" in out.stdout and "llama.cpp" in out.stdout
    try:
        reply = client.chat.completions.create(model="smol-cli", messages=PARIS, max_tokens=20)
        # sampling.top_k=1 makes the default sampler greedy: the same answer as temperature 0
        assert "Paris" in reply.choices[0].message.content
    finally:
        server.http.delete("/v1/models/smol-cli")


def test_small_gpu_gets_part_of_the_layers_and_the_replica_uses_that_count(start_server: Any) -> None:
    """Scheduler -> estimate_vram -> Placement.gpu_layers -> load(), on a simulated 700 MiB GPU."""
    server = start_server(env={"XINF_SIMULATED_GPUS": "700MiB"})
    body = {"model_name": "smollm2-instruct", "model_uid": "offload", "n_parallel": 1, "n_ctx": 8192, "n_threads": 1}
    plan = server.http.post("/v1/models", params={"dry_run": "true"}, json=body).json()
    replica = plan["replicas"][0]
    layers = replica["gpu_layers"]
    assert 0 < layers < replica["estimate"]["total_layers"] == 31
    assert replica["devices"] == [0] and replica["reserved"][0] <= 700 * 2**20

    server.launch(**body)
    model = server.http.get("/v1/models/offload").json()
    log = Path(model["replicas"][0]["log"]).read_text()
    assert f"n_gpu_layers {layers}" in log
    client = server.openai()
    try:
        reply = client.chat.completions.create(model="offload", messages=PARIS, max_tokens=20, temperature=0)
        assert "Paris" in reply.choices[0].message.content
    finally:
        client.close()


def test_same_seed_same_sample(server: ServerProcess, client: openai.OpenAI, smol: str) -> None:
    story = [{"role": "user", "content": "Write a short poem about the sea."}]

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(model=smol, messages=story, max_tokens=24, temperature=1.0, seed=seed)
        return reply.choices[0].message.content

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))


def test_models_advertise_the_context_one_request_gets(server: ServerProcess, smol: str) -> None:
    model = server.http.get(f"/v1/models/{smol}").json()
    assert model["context_length"] == SMALL["n_ctx"] // SMALL["n_parallel"]  # n_ctx is shared by the slots
    listed = {m["id"]: m for m in server.http.get("/v1/models").json()["data"]}
    assert listed[smol]["context_length"] == 512


def test_cached_prompt_tokens_are_reported(client: openai.OpenAI, smol: str) -> None:
    replies = [client.chat.completions.create(model=smol, messages=PARIS, max_tokens=1) for _ in range(3)]
    cached = [r.usage.prompt_tokens_details.cached_tokens for r in replies]
    assert cached[0] >= 0 and max(cached[1:]) > 0  # two replicas: the third request meets its replica's cache again


def test_token_id_prompts_logit_bias_and_echo(client: openai.OpenAI, smol: str) -> None:
    text = client.completions.create(model=smol, prompt="The capital of France is", max_tokens=3, temperature=0)
    ids = client.completions.create(model=smol, prompt=[504, 3575, 282, 4649, 314], max_tokens=3, temperature=0)
    assert ids.usage.prompt_tokens == 5 and ids.choices[0].text == text.choices[0].text
    forced = client.completions.create(
        model=smol, prompt="The capital of France is", max_tokens=3, temperature=0, logit_bias={"28": 100}
    )
    assert len(set(forced.choices[0].text)) == 1 and forced.choices[0].text != text.choices[0].text
    for bias, named in (({"999999": 5}, "999999"), ({"abc": 5}, "abc")):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model=smol, prompt="hi", max_tokens=2, logit_bias=bias)
        assert info.value.body["param"] == "logit_bias" and named in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=smol, prompt="hi", max_tokens=2, echo=True, logprobs=1)
    assert info.value.body["param"] == "echo"
    echoed = client.completions.create(model=smol, prompt="Hello", max_tokens=2, echo=True)
    assert echoed.choices[0].text.startswith("Hello")
