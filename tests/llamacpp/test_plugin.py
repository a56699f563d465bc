"""Plugin behaviour outside the contract: matching, options, the replica's own HTTP port."""

from __future__ import annotations

import httpx
import pytest

from xinf.devices import inventory
from xinf.errors import LaunchError
from xinf.types import ModelSource, ModelSpec, Placement
from xinf_llamacpp.plugin import load, match_model, unload


def test_declines_embedding_only_gguf_with_a_reason() -> None:
    spec = ModelSpec(name="embedder", format="ggufv2", abilities=["embed"], source=ModelSource(path="/x.gguf"))
    answer = match_model(spec=spec, hardware=inventory())
    assert not answer.ok
    assert "chat" in answer.reason and "embed" in answer.reason


def test_claims_gguf_chat_models(smollm2: ModelSpec) -> None:
    assert match_model(spec=smollm2, hardware=inventory()).ok


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"n_ctxx": 512}, ["'n_ctxx'", "n_ctx"]),
        ({"top_k": 5}, ["'top_k'", "sampling.top_k"]),
        ({"sampling.temperature": 0.5}, ["sampling.temp"]),
        ({"cache_type_k": "q9"}, ["cache_type_k", "q8_0"]),
        ({"flash_attn_type": "sometimes"}, ["auto", "enabled", "disabled"]),
        ({"n_ctx": "big"}, ["n_ctx", "'big'"]),
        ({"model.path": "/etc/passwd"}, ["model.path", "model_path"]),
    ],
)
def test_bad_options_name_the_option_and_the_choices(smollm2: ModelSpec, options: dict, words: list[str]) -> None:
    with pytest.raises(LaunchError) as info:
        load(spec=smollm2, options={"n_ctx": 256, "n_threads": 1, **options}, placement=Placement())
    for word in words:
        assert word in info.value.message


def test_missing_file_is_a_launch_error() -> None:
    spec = ModelSpec(name="gone", format="ggufv2", source=ModelSource(path="/nonexistent/model.gguf"))
    with pytest.raises(LaunchError, match=r"/nonexistent/model\.gguf"):
        load(spec=spec, options={}, placement=Placement())


def test_options_reach_llamacpp_and_its_own_port_is_closed(smollm2: ModelSpec) -> None:
    model = load(
        spec=smollm2,
        options={"n_ctx": 512, "n_parallel": 1, "n_threads": 1, "sampling": {"top_k": 7}},
        placement=Placement(),
    )
    try:
        assert model.per_slot == 512 and model.n_parallel == 1
        # xllamacpp's embedded HTTP server must not serve anyone who bypasses xinf
        url = model.server.listening_address
        reply = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 401
        assert httpx.get(f"{url}/props", headers={"Authorization": "Bearer wrong"}).status_code == 401
        # with the replica's key, llama.cpp's own settings show the options that were set
        props = httpx.get(f"{url}/props", headers={"Authorization": f"Bearer {model.http_key}"}).json()
        assert props["default_generation_settings"]["params"]["top_k"] == 7
        assert props["default_generation_settings"]["n_ctx"] == 512
    finally:
        unload(model=model)


def slots(model: object) -> list[dict]:
    url = model.server.listening_address  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {model.http_key}"}  # type: ignore[attr-defined]
    return httpx.get(f"{url}/slots", headers=headers).json()


async def test_closing_a_stream_stops_the_llamacpp_task(smollm2: ModelSpec) -> None:
    import asyncio

    from xinf.types import GenerateRequest
    from xinf_llamacpp.plugin import generate

    model = load(
        spec=smollm2,
        options={"n_ctx": 4096, "n_parallel": 1, "n_threads": 1, "endpoint_slots": True},
        placement=Placement(),
    )
    try:
        request = GenerateRequest(prompt="Once upon a time", max_tokens=3000, ignore_eos=True)
        stream = generate(model=model, request=request)
        async for _ in stream:
            break
        assert slots(model)[0]["is_processing"]
        await stream.aclose()
        for _ in range(300):  # bounded wait: the task ends at its next token
            if not slots(model)[0]["is_processing"]:
                break
            await asyncio.sleep(0.1)
        slot = slots(model)[0]
        assert not slot["is_processing"]
        assert slot["next_token"][0]["n_decoded"] < 3000
    finally:
        unload(model=model)


async def test_json_schema_constrains_the_output(smollm2: ModelSpec) -> None:
    import json

    from xinf.types import GenerateRequest
    from xinf_llamacpp.plugin import generate

    model = load(spec=smollm2, options={"n_ctx": 512, "n_parallel": 1, "n_threads": 1}, placement=Placement())
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "enum": ["Paris", "London", "Rome"]}},
        "required": ["capital"],
    }
    try:
        request = GenerateRequest(
            messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON."}],
            max_tokens=40,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        )
        chunks = [c async for c in generate(model=model, request=request)]
        answer = json.loads("".join(c.text for c in chunks))
        assert answer["capital"] in ("Paris", "London", "Rome")
        assert chunks[-1].finish_reason == "stop"
    finally:
        unload(model=model)


@pytest.mark.parametrize(("options", "warms_up"), [({}, False), ({"warmup": True}, True)])
def test_a_cpu_replica_skips_the_warm_up_run_unless_asked(
    smollm2: ModelSpec, capfd: pytest.CaptureFixture[str], options: dict, warms_up: bool
) -> None:
    """The warm-up only delays a CPU replica's launch (its first request is no slower without it); the option
    still turns it on."""
    model = load(
        spec=smollm2,
        options={"n_ctx": 256, "n_parallel": 1, "n_threads": 1, "verbosity": 4, **options},
        placement=Placement(),
    )
    try:
        assert len(slots(model)) == 1  # llama.cpp's loop is running (a Server destroyed before it starts can hang)
        log = capfd.readouterr()
        text = log.out + log.err
        assert "load_model: initializing" in text  # llama.cpp's log of the load is here
        assert ("warming up the model" in text) is warms_up
    finally:
        unload(model=model)


# A replica stopped right after its load: xllamacpp's Server returns before llama.cpp's main loop starts, and a
# server destroyed in that gap waited for the loop forever (1 in ~10 cycles here). Run in a child with a timeout so
# that a hang fails the test instead of freezing the run.
UNLOAD_RIGHT_AFTER_LOAD = """
import sys
import tinymodels
from xinf.types import ModelSource, ModelSpec, Placement
from xinf_llamacpp.plugin import load, unload

spec = ModelSpec(name="tiny", format="ggufv2", source=ModelSource(path=str(tinymodels.ensure("gguf-tiny"))))
for i in range(int(sys.argv[1])):
    unload(model=load(spec=spec, options={"n_ctx": 256, "n_threads": 1, "verbosity": 0}, placement=Placement()))
print("unloaded", i + 1, flush=True)
"""


def test_a_model_unloaded_right_after_its_load_stops() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    tools = str(Path(__file__).resolve().parents[2] / "tools")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tools, os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", UNLOAD_RIGHT_AFTER_LOAD, "40"], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"a load followed by an unload hung: {(exc.stdout or b'')[-300:]!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unloaded 40" in done.stdout
