"""Connection limits against a real `xinf serve`: idle, header and body timeouts, and the connection cap."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from xinf.testing.server import ServerProcess

LIMITS = {
    "XINF_KEEPALIVE_TIMEOUT": "1",
    "XINF_HEADER_TIMEOUT": "1",
    "XINF_BODY_TIMEOUT": "1",
    "XINF_MAX_CONNECTIONS": "8",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("conn"), env=LIMITS) as server:
        yield server


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    start = time.monotonic()
    data = b""
    while True:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            break
        if not more:
            break
        data += more
    return data, time.monotonic() - start


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert waited < 25  # closed by the 1 s keep-alive timeout, not by the client's 30 s


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        data, waited = read_until_closed(sock)
    assert waited < 25
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")


def test_slow_headers_get_408(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a slowloris trickle: each byte well inside any per-read timeout
            time.sleep(0.3)
            sock.sendall(b"X")
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"request headers not received within 1s" in data
    assert waited < 25


def test_a_stalled_body_gets_408(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model":'
        )
        data, waited = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"no request body received for 1s" in data
    assert waited < 25
    assert server.http.get("/health").status_code == 200
    assert "unhandled error" not in server.log()  # the handler that was reading the body ended quietly


def test_connections_over_the_cap_are_refused_cleanly(start_server) -> None:
    server: ServerProcess = start_server(env={"XINF_MAX_CONNECTIONS": "4", "XINF_HEADER_TIMEOUT": "60"})
    held = [connect(server) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(server) as extra:
            data, _ = read_until_closed(extra)
        assert data.startswith(b"HTTP/1.1 503 "), data[:200]
        assert b"XINF_MAX_CONNECTIONS" in data and b"connection: close" in data.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert server.http.get("/health").status_code == 200  # served again once the others left
