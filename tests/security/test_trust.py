"""Trust boundaries against a real `xinf serve`: key scopes, forwarded headers, browser safety."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from xinf.server.security import startup_notes
from xinf.settings import Settings
from xinf.testing.server import ServerProcess

ADMIN = "sk-admin-5d1f0e7c"
INFER = "sk-chat-93ab44c2"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def bearer(key: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {key}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Keys from a file: the admin key only as its SHA-256, the inference key in clear."""
    home = tmp_path_factory.mktemp("keyed")
    keys = home / "keys"
    keys.write_text(
        f"# who may do what\nadmin sha256:{hashlib.sha256(ADMIN.encode()).hexdigest()}\ninference {INFER}\n"
    )
    with ServerProcess(home / "home", args=["--api-key-file", str(keys)]) as server:
        assert (
            server.http.post(
                "/v1/models", json={"model_name": "xinf-test-chat", "model_uid": "m"}, headers=bearer(ADMIN)
            ).status_code
            == 200
        )
        yield server


def test_an_inference_key_chats_but_cannot_administer(keyed: ServerProcess) -> None:
    http = keyed.http
    assert http.post("/v1/chat/completions", json=CHAT, headers=bearer(INFER)).status_code == 200
    assert http.get("/v1/models", headers=bearer(INFER)).json()["data"][0]["id"] == "m"
    for method, path, body in [
        ("POST", "/v1/models", {"model_name": "xinf-test-chat", "model_uid": "other"}),
        ("DELETE", "/v1/models/m", None),
        ("POST", "/v1/models/m/replicas", {"replica": 1}),
        ("POST", "/v1/model_registrations/LLM", {"model": {"model_name": "x", "model_specs": []}}),
        ("GET", "/v1/cache/models", None),
        ("GET", "/v1/virtualenvs", None),
    ]:
        refused = http.request(method, path, json=body, headers=bearer(INFER))
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["type"] == "permission_error"
        assert "needs an admin key" in refused.json()["error"]["message"]
    assert [m["id"] for m in http.get("/v1/models", headers=bearer(ADMIN)).json()["data"]] == ["m"]
    # Generation routes xinf does not serve still answer an inference key with their own 400, not a 403.
    video = http.post("/v1/video/generations", json={"model": "m", "prompt": "x"}, headers=bearer(INFER))
    assert video.status_code == 400, video.text
    abort = http.post("/v1/models/m/requests/nope/abort", headers=bearer(INFER))
    assert abort.status_code != 403, abort.text


def test_keys_are_checked_and_the_scheme_is_case_insensitive(keyed: ServerProcess) -> None:
    http = keyed.http
    assert http.get("/v1/models").status_code == 401
    assert http.get("/v1/models", headers=bearer(INFER + "x")).status_code == 401
    # The file holds only the admin key's hash: the hash itself is no key.
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    assert http.get("/v1/models", headers=bearer(digest)).status_code == 401
    assert http.get("/v1/models", headers=bearer(INFER, "bearer")).status_code == 200
    assert http.get("/v1/models", headers=bearer(INFER, "BEARER")).status_code == 200
    assert http.get("/v1/models", headers={"x-api-key": INFER}).status_code == 200  # Anthropic's clients
    assert (
        http.post("/v1/models", json={"model_name": "xinf-test-chat"}, headers={"x-api-key": INFER}).status_code == 403
    )
    assert http.get("/v1/cluster/auth").json() == {"auth": True}


def test_keys_never_reach_the_command_line_or_the_logs(keyed: ServerProcess) -> None:
    assert keyed.proc is not None
    cmdline = Path(f"/proc/{keyed.proc.pid}/cmdline").read_bytes()
    assert ADMIN.encode() not in cmdline and INFER.encode() not in cmdline
    assert ADMIN not in keyed.log() and INFER not in keyed.log()


def test_405_names_the_allowed_methods(keyed: ServerProcess) -> None:
    answer = keyed.http.put("/v1/chat/completions", headers=bearer(ADMIN), json={})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------- forwarded headers


def test_x_forwarded_for_is_ignored_without_trusted_proxies(start_server) -> None:
    server: ServerProcess = start_server(env={"XINFERENCE_ALLOWED_IPS": "10.0.0.0/8"})
    claim = {"X-Forwarded-For": "10.0.0.1", "Forwarded": "for=10.0.0.1"}
    assert server.http.get("/v1/models", headers=claim).status_code == 403
    launch = server.http.post("/v1/models", json={"model_name": "xinf-test-chat"}, headers=claim)
    assert launch.status_code == 403
    assert server.http.delete("/v1/models/x", headers=claim).status_code == 403


def test_a_named_proxy_passes_the_real_client_address(start_server) -> None:
    """Behind a proxy on this machine: the allowlist and the loopback-only admin rule see the real client."""
    server: ServerProcess = start_server(
        args=["--forwarded-allow-ips", "127.0.0.1"], env={"XINFERENCE_ALLOWED_IPS": "10.0.0.0/8"}
    )
    assert server.http.get("/v1/models").status_code == 403  # the proxy itself is not in the allowlist
    remote = {"X-Forwarded-For": "10.0.0.7"}
    assert server.http.get("/v1/models", headers=remote).status_code == 200
    assert server.http.get("/v1/models", headers={"X-Forwarded-For": "192.168.1.1"}).status_code == 403
    # No admin key: a remote client may read but not launch.
    refused = server.http.post("/v1/models", json={"model_name": "xinf-test-chat"}, headers=remote)
    assert refused.status_code == 403
    assert "answers only clients on the server's machine" in refused.json()["error"]["message"]


def test_start_up_says_when_admin_routes_are_loopback_only() -> None:
    settings = Settings.from_env({})
    [note] = startup_notes(settings, "0.0.0.0")
    assert "no admin key" in note and "0.0.0.0" in note
    assert startup_notes(settings, "127.0.0.1") == []
    assert startup_notes(Settings.from_env({"XINF_API_KEY": "k"}), "0.0.0.0") == []


# ---------------------------------------------------------------- browsers


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("open")) as server:
        server.launch(model_name="xinf-test-chat", model_uid="m")
        yield server


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_json_routes_refuse_other_bodies(open_server: ServerProcess, content_type: str | None) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    headers = {"content-type": content_type} if content_type else {}
    for path in ("/v1/chat/completions", "/v1/models"):
        answer = open_server.http.post(path, content=body, headers=headers)
        assert answer.status_code == 415, answer.text
        assert answer.json()["error"]["code"] == "unsupported_media_type"
    assert open_server.http.post("/v1/chat/completions", json={**CHAT}).status_code == 200


def test_no_origin_is_allowed_by_default(open_server: ServerProcess) -> None:
    preflight = open_server.http.options(
        "/v1/chat/completions",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    # A write that names a foreign origin is refused even when its body is JSON.
    foreign = open_server.http.post("/v1/chat/completions", json=CHAT, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
    # The server's own page sends its own origin.
    own = open_server.http.post("/v1/chat/completions", json=CHAT, headers={"Origin": open_server.url})
    assert own.status_code == 200


def test_cors_answers_for_the_configured_origins(start_server) -> None:
    server: ServerProcess = start_server(args=["--cors-allow-origins", "https://app.example"])
    server.launch(model_name="xinf-test-chat", model_uid="m")
    preflight = server.http.options(
        "/v1/chat/completions",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    other = server.http.options(
        "/v1/chat/completions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    reply = server.http.post("/v1/chat/completions", json=CHAT, headers={"Origin": "https://app.example"})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    assert (
        httpx.get(f"{server.url}/v1/models", headers={"Origin": "https://evil.example"}).headers.get(
            "access-control-allow-origin"
        )
        is None
    )


def test_a_bad_key_file_stops_start_up_without_showing_keys(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    keys = tmp_path / "keys"
    keys.write_text(f"inference {INFER}\nsuperuser {ADMIN}\n")
    done = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "serve", "--port", "9", "--api-key-file", str(keys)],
        env={**os.environ, "XINFERENCE_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"XINF_API_KEYS_FILE {keys}, line 2: expected 'admin KEY' or 'inference KEY'" in done.stderr
    assert ADMIN not in done.stderr and INFER not in done.stderr
