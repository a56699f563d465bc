"""The relay: frames that carry several chunks, split back into the same answers a frame per token gives.

Every model is launched twice in one server: batched (the default: a replica writes every chunk it has ready
in one frame) and with ``XINF_RELAY_BATCH=0`` (a frame per chunk).  The test engine with no token delay writes
a whole answer in one turn, so the batched side gets it in a few frames; both must answer the same, streamed
and not, down to each SSE event.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from xinf.replica import protocol as p
from xinf.replica.child import BATCH_LIMIT, Replica
from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for
from xinf.types import Chunk

TOOLS_SCRIPT = (
    'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
# JSON's special characters and non-ASCII text, split anywhere: the events are encoded from bytes templates.
ODD_TEXT = 'He said "hi"\\there\n\ttabs, üñíçødé ☃ \U0001f600 </script> \x01 end.'
MODELS = {
    "chat": {"model_name": "xinf-test-chat"},
    "odd": {"model_name": "xinf-test-chat", "script": ODD_TEXT, "chunks": [1, 3, 2]},
    "tools": {"model_name": "xinf-test-tools", "script": TOOLS_SCRIPT, "chunks": [3, 1, 7]},
    "think": {"model_name": "xinf-test-reasoning", "script": "<think>Two and two.</think>\n\nFour.", "chunks": [2, 5]},
}
ONE_PER_FRAME = {"XINF_RELAY_BATCH": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("relay")
    with ServerProcess(home) as server:
        for name, body in MODELS.items():
            server.launch(model_uid=f"{name}-batched", **body)
            server.launch(model_uid=f"{name}-single", envs=ONE_PER_FRAME, **body)
        events = home / "events.log"
        server.launch(model_name="xinf-test-chat", model_uid="slow", token_delay=0.02, events=str(events))
        server.events = events  # type: ignore[attr-defined]
        yield server


def anonymous(value: Any) -> Any:
    """``value`` without what differs between two answers to one request: ids, times, the model's name."""
    if isinstance(value, dict):
        return {k: anonymous(v) for k, v in value.items() if k not in ("id", "created", "model", "system_fingerprint")}
    if isinstance(value, list):
        return [anonymous(v) for v in value]
    return value


def sse(server: ServerProcess, path: str, body: dict[str, Any]) -> list[Any]:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with server.http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [anonymous(json.loads(line[6:])) for line in lines[:-1]]


def both(server: ServerProcess, name: str, path: str, body: dict[str, Any]) -> tuple[list[Any], Any]:
    """The streamed events and the whole answer of ``body`` from ``name``, the same from both sides of it."""
    answers = []
    for side in ("batched", "single"):
        ask = {**body, "model": f"{name}-{side}"}
        whole = server.http.post(path, json=ask)
        assert whole.status_code == 200, whole.text
        answers.append((sse(server, path, ask), anonymous(whole.json())))
    assert answers[0] == answers[1]
    return answers[0]


def chat_deltas(events: list[Any], field: str, index: int = 0) -> str:
    return "".join(c["delta"].get(field) or "" for e in events for c in e["choices"] if c["index"] == index)


def test_chat_with_logprobs_n_and_usage_is_the_same_from_many_token_frames(server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "count for me"}],
        "max_tokens": 40,
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
    }
    events, whole = both(server, "chat", "/v1/chat/completions", body)
    for i in range(2):
        text = chat_deltas(events, "content", i)
        assert text == whole["choices"][i]["message"]["content"] and len(text.split()) == 40
        tokens = [t["token"] for e in events for c in e["choices"] if c["index"] == i and c["logprobs"]
                  for t in c["logprobs"]["content"]]  # fmt: skip
        assert "".join(tokens) == text  # token order kept
        assert [t["token"] for t in whole["choices"][i]["logprobs"]["content"]] == tokens
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["length", "length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert whole["usage"]["completion_tokens"] == 80


def test_text_with_json_escapes_and_unicode_comes_through_whole(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "say it"}], "max_tokens": 500}
    events, whole = both(server, "odd", "/v1/chat/completions", body)
    assert chat_deltas(events, "content") == ODD_TEXT == whole["choices"][0]["message"]["content"]
    completion, whole = both(server, "odd", "/v1/completions", {"prompt": "say it", "max_tokens": 500})
    assert "".join(c["text"] for e in completion for c in e["choices"]) == ODD_TEXT == whole["choices"][0]["text"]


def test_tool_call_deltas_are_the_same_from_many_token_frames(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER, TIME], "max_tokens": 500}
    events, whole = both(server, "tools", "/v1/chat/completions", body)
    calls = [call for e in events for c in e["choices"] for call in c["delta"].get("tool_calls") or []]
    assert [call["function"].get("name") for call in calls if "type" in call] == ["get_weather", "get_time"]
    assert [c["function"]["name"] for c in whole["choices"][0]["message"]["tool_calls"]] == ["get_weather", "get_time"]
    assert whole["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_deltas_are_the_same_from_many_token_frames(server: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "two and two?"}], "max_tokens": 500}
    events, whole = both(server, "think", "/v1/chat/completions", body)
    assert chat_deltas(events, "reasoning_content") == "Two and two."
    assert chat_deltas(events, "content") == "Four."
    assert whole["choices"][0]["message"]["reasoning_content"] == "Two and two."


def test_completions_with_echo_logprobs_and_several_prompts(server: ServerProcess) -> None:
    body = {
        "prompt": ["one two", "three four five"],
        "n": 2,
        "echo": True,
        "logprobs": 1,
        "max_tokens": 12,
    }
    events, whole = both(server, "chat", "/v1/completions", body)
    for i in range(4):
        text = "".join(c["text"] for e in events for c in e["choices"] if c["index"] == i)
        assert text == whole["choices"][i]["text"]
        assert text.startswith(["one two", "three four five"][i // 2])
        offsets = [o for e in events for c in e["choices"] if c["index"] == i and c["logprobs"]
                   for o in c["logprobs"]["text_offset"]]  # fmt: skip
        assert offsets == whole["choices"][i]["logprobs"]["text_offset"]
    assert events[-1]["usage"] == whole["usage"]
    assert whole["usage"]["completion_tokens"] == 48


def test_a_client_that_goes_away_stops_the_generation(server: ServerProcess) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps(
        {"model": "slow", "messages": [{"role": "user", "content": "go"}], "max_tokens": 5000, "stream": True}
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode())
        got = b""
        while got.count(b"data: ") < 5:
            got += sock.recv(65536)
    events: Path = server.events  # type: ignore[attr-defined]
    wait_for(lambda: events.read_text().split() == ["start", "closed"], timeout=20)
    wait_for(lambda: server.http.get("/v1/models/slow").json()["replicas"][0]["inflight"] == 0)


# ------------------------------------------------------------------ the replica's side, without a server


class Outlet:
    def __init__(self) -> None:
        self.frames: list[p.Frame] = []

    def send(self, frame: p.Frame) -> None:
        self.frames.append(p._decoder.decode(p.encode(frame)[4:]))  # as the server decodes it

    def send_all(self, frames: list[p.Frame]) -> None:
        for frame in frames:
            self.send(frame)

    def backlog(self) -> int:
        return 0

    async def drain(self) -> None:
        pass


def test_a_replica_writes_what_is_ready_in_one_frame_per_request_and_done_after_it() -> None:
    async def scenario() -> list[p.Frame]:
        outlet = Outlet()
        replica = Replica(outlet)
        for n in range(3):
            replica.out(1, Chunk(text=f"a{n}"))
            replica.out(2, Chunk(text=f"b{n}"))
        replica.send(p.Done(id=2))  # its chunks go first
        replica.out(1, Chunk(text="a3", finish_reason="length"))
        await asyncio.sleep(0)  # the loop turns: what is ready goes out
        await asyncio.sleep(0)
        for n in range(BATCH_LIMIT + 1):
            replica.out(3, Chunk(text=str(n)))
        await asyncio.sleep(0)
        return outlet.frames

    frames = asyncio.run(scenario())
    texts = [(type(f).__name__, f.id, [c.text for c in f.chunks] if isinstance(f, p.Out) else None) for f in frames]
    assert texts[:4] == [
        ("Out", 1, ["a0", "a1", "a2"]),
        ("Out", 2, ["b0", "b1", "b2"]),
        ("Done", 2, None),
        ("Out", 1, ["a3"]),
    ]
    assert frames[3].chunks[0].finish_reason == "length"  # type: ignore[attr-defined]
    assert [len(f.chunks) for f in frames[4:]] == [BATCH_LIMIT, 1]  # type: ignore[attr-defined]
    assert [c.text for f in frames[4:] for c in f.chunks] == [str(n) for n in range(BATCH_LIMIT + 1)]  # type: ignore[attr-defined]


def test_xinf_relay_batch_0_sends_a_frame_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XINF_RELAY_BATCH", "0")

    async def scenario() -> list[p.Frame]:
        outlet = Outlet()
        replica = Replica(outlet)
        for n in range(3):
            replica.out(1, Chunk(text=str(n)))
        await asyncio.sleep(0)
        return outlet.frames

    assert [[c.text for c in f.chunks] for f in asyncio.run(scenario())] == [["0"], ["1"], ["2"]]  # type: ignore[attr-defined]
