"""Access control: API keys (401), the IP allowlist (403) and the request body limit (413)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from xinf.server.access import IPAllowlist, parse_networks
from xinf.settings import Settings, SettingsError
from xinf.testing.server import ServerProcess

KEY = "sk-xinf-test-9f8e7d6c5b4a"


def xinf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def all_logs(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.log"))


def test_api_key_from_the_command_line(start_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, args=["--api-key", KEY])
    assert httpx.get(f"{server.url}/health").status_code == 200  # liveness stays open
    assert httpx.get(f"{server.url}/v1/cluster/auth").json() == {"auth": True}

    missing = httpx.get(f"{server.url}/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401 and KEY not in wrong.text
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": KEY}).status_code == 401  # no "Bearer"
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    ok = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["data"] == []

    # The CLI sends --api-key or $XINF_API_KEY; without one it fails on one line.
    launched = xinf("launch", "-n", "xinf-test-chat", "-e", server.url, "--api-key", KEY)
    assert launched.returncode == 0, launched.stderr
    listed = xinf("list", "-e", server.url, env={"XINF_API_KEY": KEY})
    assert listed.returncode == 0 and "xinf-test-chat" in listed.stdout
    refused = xinf("list", "-e", server.url, env={"XINF_API_KEY": ""})
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: missing or invalid API key: send the header 'Authorization: Bearer <key>' (HTTP 401)"
    )

    # OpenAI's client sends the key as a bearer token; a wrong one is an AuthenticationError.
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0) as wrong_client:
        with pytest.raises(openai.AuthenticationError):
            wrong_client.models.list()
    stream = client.chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 3
    client.close()

    # xinference-client asks /v1/cluster/auth first, then sends the key.
    from xinference_client import RESTfulClient

    assert "xinf-test-chat" in RESTfulClient(server.url, api_key=KEY).list_models()

    server.stop()
    assert KEY not in all_logs(home)
    assert KEY not in (home / "server.log").read_text()


def test_api_key_from_the_environment(start_server) -> None:
    server: ServerProcess = start_server(env={"XINF_API_KEY": KEY})
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{server.url}/v1/models", headers=auth).status_code == 200
    # Replicas do not inherit the key: an engine that prints its environment cannot leak it.
    launched = httpx.post(
        f"{server.url}/v1/models", headers=auth, json={"model_name": "xinf-test-chat", "script_env": "XINF_API_KEY"}
    )
    assert launched.status_code == 200
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers=auth,
        json={"model": "xinf-test-chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert reply.json()["choices"][0]["message"]["content"] == "XINF_API_KEY=<unset>"


def test_no_key_means_open(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v1/cluster/auth").json() == {"auth": False}
    assert httpx.get(f"{server.url}/v1/models").status_code == 200


def test_allowed_ips_refuse_other_clients(start_server) -> None:
    server: ServerProcess = start_server(env={"XINFERENCE_ALLOWED_IPS": "10.0.0.0/8, 2001:db8::/32"})
    refused = httpx.get(f"{server.url}/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert httpx.get(f"{server.url}/health").status_code == 403  # an address rule covers every route


def test_allowed_ips_let_listed_clients_in(start_server) -> None:
    server: ServerProcess = start_server(env={"XINFERENCE_ALLOWED_IPS": "192.168.0.0/16,127.0.0.1"})
    assert httpx.get(f"{server.url}/v1/models").status_code == 200


def test_ipv6_clients(start_server) -> None:
    allowed: ServerProcess = start_server(host="::1", env={"XINFERENCE_ALLOWED_IPS": "127.0.0.1,::1/128"})
    assert httpx.get(f"{allowed.url}/v1/models").status_code == 200
    refused: ServerProcess = start_server(host="::1", env={"XINFERENCE_ALLOWED_IPS": "127.0.0.0/8,fd00::/8"})
    response = httpx.get(f"{refused.url}/v1/models")
    assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"


def test_allowlist_rules() -> None:
    allow = IPAllowlist(parse_networks(["10.1.0.0/16", "192.168.1.7", "fd00::/8"]))
    assert allow.allows("10.1.200.3") and not allow.allows("10.2.0.1")
    assert allow.allows("192.168.1.7") and not allow.allows("192.168.1.8")
    assert allow.allows("::ffff:10.1.0.9") and not allow.allows("::ffff:10.3.0.9")
    assert allow.allows("fd12:3456::1") and not allow.allows("fe80::1")
    assert allow.allows("fd00::1%eth0")  # a scoped address
    assert not allow.allows("not-an-ip") and not allow.allows(None)


def test_bad_allowlist_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"'10\.0\.0\.300' is not an IP address or CIDR block"):
        Settings.from_env({"XINFERENCE_ALLOWED_IPS": "10.0.0.0/8,10.0.0.300"})
    done = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "serve", "--port", "9"],
        env={**os.environ, "XINFERENCE_HOME": str(tmp_path), "XINFERENCE_ALLOWED_IPS": "nope"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "XINFERENCE_ALLOWED_IPS: 'nope' is not an IP address or CIDR block" in done.stderr


# ---------------------------------------------------------------- 413


LIMIT = 65536


@pytest.fixture
def small_body_server(start_server) -> ServerProcess:
    server: ServerProcess = start_server(env={"XINF_MAX_BODY_BYTES": str(LIMIT)})
    server.launch(model_name="xinf-test-chat")
    return server


def raw_request(port: int, head: bytes, body_chunks, read_after_each: bool = True) -> tuple[bytes, int]:
    """Send ``head`` then body chunks until the server answers; returns the answer and bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(30)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return answer, sent


def test_real_upload_over_the_limit_gets_413(small_body_server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "x" * (LIMIT * 4)}]
    response = small_body_server.http.post(
        "/v1/chat/completions", json={"model": "xinf-test-chat", "messages": messages}
    )
    assert response.status_code == 413
    assert (
        response.json()["error"]["message"]
        == f"request body of {len(response.request.content)} bytes is over the limit of {LIMIT}"
    )
    ok = small_body_server.http.post(
        "/v1/chat/completions",
        json={"model": "xinf-test-chat", "messages": [{"role": "user", "content": "x" * 1000}], "max_tokens": 1},
    )
    assert ok.status_code == 200


def test_lying_content_length_is_refused_before_the_body_is_read(small_body_server: ServerProcess) -> None:
    # Announces 10 GB and sends 64 KiB pieces: the 413 comes back long before 10 GB could have been read.
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000000\r\n\r\n"
    )
    answer, sent = raw_request(small_body_server.port, head, (b"x" * 65536 for _ in range(2000)))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 100 * 65536


def test_chunked_upload_is_cut_off_at_the_limit(small_body_server: ServerProcess) -> None:
    # No Content-Length at all: the server counts while it reads and stops at the limit.
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 16384
    framed = b"%x\r\n" % len(piece) + piece + b"\r\n"
    answer, sent = raw_request(small_body_server.port, head, (framed for _ in range(4000)))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 4000 * len(framed)
    body = answer.split(b"\r\n\r\n", 1)[1]
    if body.strip():
        assert json.loads(body[body.index(b"{") :])["error"]["message"].startswith("request body is over the limit")


def test_content_length_smaller_than_the_body_reads_only_what_was_announced(small_body_server: ServerProcess) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    )
    answer, _ = raw_request(small_body_server.port, head, [b"{" + b"x" * (4 * LIMIT)])
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert httpx.get(f"{small_body_server.url}/health").status_code == 200  # and the server is fine
