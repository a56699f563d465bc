"""The `xinf` command line against a real server: tables, --json, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from xinf.testing.server import ServerProcess


def xinf(*args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "xinf.cli.main", *args]
    if endpoint:
        command += ["-e", endpoint]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_launch_list_terminate(server: ServerProcess) -> None:
    done = xinf("launch", "-n", "xinf-test-chat", "-u", "chat", "-r", "2", "--token_delay", "0", endpoint=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "chat is ready: xinf-test-chat (test) on test, 2 replica(s)"
    table = xinf("list", endpoint=server.url).stdout.splitlines()
    assert table[0].split() == ["UID", "NAME", "ENGINE", "FORMAT", "SIZE(B)", "QUANT", "REPLICAS", "CORES", "STATUS"]
    row = table[1].split()
    assert row[:7] + row[-1:] == ["chat", "xinf-test-chat", "test", "test", "-", "none", "2/2", "ready"]
    assert row[8] == "|"  # CORES: one set per replica, "0 | 1" on two cores
    listed = json.loads(xinf("list", "--json", endpoint=server.url).stdout)
    assert [m["id"] for m in listed] == ["chat"]
    assert xinf("terminate", "chat", endpoint=server.url).stdout.strip() == "terminated chat"
    assert xinf("list", endpoint=server.url).stdout.strip() == "no models running"


def test_errors_are_one_line_and_non_zero(server: ServerProcess, tmp_path: Path) -> None:
    missing = xinf("terminate", "ghost", endpoint=server.url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: model 'ghost' is not running (running: none) (HTTP 404)"
    nobody = xinf("list", endpoint="http://127.0.0.1:9")
    assert nobody.returncode == 1
    assert nobody.stderr.strip().startswith("Error: cannot reach xinf at http://127.0.0.1:9")
    bad_option = xinf("launch", "-n", "xinf-test-chat", "oops", endpoint=server.url)
    assert bad_option.returncode == 2 and "engine options look like --name value" in bad_option.stderr


def test_register_persist_and_list(start_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "my-test", "specs": [{"format": "test"}], "abilities": ["chat", "generate"]}))
    out = xinf("register", "--file", str(spec), "--persist", endpoint=server.url)
    assert out.returncode == 0 and out.stdout.strip() == "registered my-test (persisted)"
    table = xinf("registrations", endpoint=server.url).stdout.splitlines()
    assert table[1].split()[:4] == ["my-test", "LLM", "no", "test"]
    again = xinf("register", "--file", str(spec), endpoint=server.url)
    assert again.returncode == 1 and "already registered" in again.stderr

    server.stop()
    server = start_server(home)  # the registration survived the restart
    assert "my-test" in xinf("registrations", endpoint=server.url).stdout
    assert xinf("launch", "-n", "my-test", endpoint=server.url).returncode == 0
    reply = server.openai().chat.completions.create(
        model="my-test", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert reply.usage.completion_tokens == 3
    assert xinf("unregister", "my-test", endpoint=server.url).stdout.strip() == "unregistered my-test"
    assert "no custom models registered" in xinf("registrations", endpoint=server.url).stdout


def test_engines_for_a_model_says_why_not(server: ServerProcess) -> None:
    out = xinf("engines", "--model", "qwen3", endpoint=server.url).stdout.splitlines()
    assert out[0].split() == ["ENGINE", "AVAILABLE", "SPECS", "OR", "REASON"]
    test_row = next(line for line in out if line.startswith("test "))
    assert test_row.count("serves only format 'test'") == 1  # said once, not once per spec
    ok = xinf("engines", "--model", "xinf-test-chat", endpoint=server.url).stdout
    assert "yes" in ok and "test none" in ok
    # the count is the number of specs the engine can serve, as the web page says it
    api = server.http.get("/v1/engines", params={"model": "xinf-test-chat"}).json()
    served = next(m for m in api["matches"] if m["engine"] == "test")["specs"]
    n = len(served)
    assert f"{n} spec{'s' if n != 1 else ''}:" in ok


def test_help_imports_nothing_heavy() -> None:
    heavy = ("torch", "transformers", "xllamacpp", "vllm", "mlx", "sglang", "starlette", "uvicorn", "httpx")
    code = f"import sys, xinf.cli.main; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == ""
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import xinf.cli"], capture_output=True, text=True
    ).stderr
    for name in ("torch", "transformers", "xllamacpp", "vllm"):
        assert f" {name}\n" not in importtime and f" {name}." not in importtime


def test_every_client_command_takes_json() -> None:
    from xinf.cli.main import cli

    client_commands = [c for c in cli.commands.values() if any(p.name == "endpoint" for p in c.params)]
    assert len(client_commands) >= 10
    assert [c.name for c in client_commands if not any(p.name == "as_json" for p in c.params)] == []
