"""The benchmarks' HTTP client (bench/client.py) against a real ``xinf serve``: tokens and first-token times.

The throughput and relay sections trust its counts (a side that writes fewer tokens than asked fails the
run), so what it reads from a stream is checked here on the test engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bench.client import Connection, OverHttp, completion_tokens, has_text
from bench.common import run_batch, run_loop
from xinf.testing.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"XINF_KEEPALIVE_TIMEOUT": "0.5"}  # idle connections close soon: the client must reopen them
    with ServerProcess(tmp_path_factory.mktemp("bench-client"), env=env) as server:
        server.launch(model_name="xinf-test-chat", model_uid="chat", token_delay=0.01)
        yield server


def test_streams_count_every_token_on_reused_and_reopened_connections(server: ServerProcess) -> None:
    client = OverHttp(server.url, "chat", 7)

    async def run() -> tuple[int, list[float], int]:
        sample = await run_batch(client.one, 3, 9)
        connections = len(client.idle)
        await asyncio.sleep(1.5)  # the server closes the idle connections
        again = await run_batch(client.one, 3, 3)
        await client.close()
        return sample.tokens + again.tokens, sample.ttfts + again.ttfts, connections

    tokens, ttfts, connections = run_loop(run())
    assert tokens == 12 * 7
    assert len(ttfts) == 12 and all(0 < t < 30 for t in ttfts)
    assert connections == 3  # one keep-alive connection per request in flight, reused by the next


def test_an_error_status_is_raised_with_its_status_line(server: ServerProcess) -> None:
    client = OverHttp(server.url, "no-such-model", 4)
    with pytest.raises(RuntimeError, match=r"HTTP/1\.1 404"):
        asyncio.run(client.one(0))
    assert client.idle == []


def test_one_connection_reads_a_stream_to_its_usage(server: ServerProcess) -> None:
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": true,'
    body += b' "stream_options": {"include_usage": true}}'

    async def run() -> tuple[bytes, float]:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        connection = Connection(host, int(port))
        try:
            return await connection.post("/v1/chat/completions", body, has_text)
        finally:
            connection.close()

    tail, first = asyncio.run(run())
    assert first > 0
    assert completion_tokens(tail) == 5
    assert tail.endswith(b"data: [DONE]\n\n")
