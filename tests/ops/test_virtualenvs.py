"""Per-model virtual environments, with a small real package from the package index."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for

PACKAGE = "inflection==0.5.1"  # small, pure Python, and not a dependency of xinf or its tests

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("inflection") is not None, reason="inflection is installed in the test environment"
)


def say(server: ServerProcess, uid: str) -> str:
    with server.openai() as client:
        reply = client.chat.completions.create(model=uid, messages=[{"role": "user", "content": "?"}], max_tokens=20)
    return reply.choices[0].message.content


def xinf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xinf.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_model_gets_its_own_environment_with_the_package(start_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server: ServerProcess = start_server(home)
    launched = xinf(
        "launch", "-n", "xinf-test-chat", "-u", "venv", "--virtual-env-package", PACKAGE,
        "--script_import", "inflection", "-e", server.url,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    name, version, module_file = say(server, "venv").split()
    assert (name, version) == ("inflection", "0.5.1")
    envs = json.loads(xinf("virtualenvs", "--json", "-e", server.url).stdout)
    assert len(envs) == 1 and envs[0]["packages"] == [PACKAGE] and envs[0]["in_use"]
    env = Path(envs[0]["path"])
    assert env.parent == home / "virtualenvs" and Path(module_file).is_relative_to(env)
    model = server.http.get("/v1/models/venv").json()
    assert model["virtual_env"] == envs[0]["python"]

    # Another model of the same server, without packages, runs in the server's environment.
    server.launch(model_name="xinf-test-chat", model_uid="plain", script_import="xinf")
    assert not Path(say(server, "plain").split()[2]).is_relative_to(home)

    # The same packages again: the environment is reused, nothing is installed; the warm pool of the environment's
    # interpreter (one per interpreter, beside the server's) has a worker ready for it.
    wait_for(lambda: server.metric("xinf_warm_pool_workers", engine="test", state="idle") == 2)
    server.launch(
        model_name="xinf-test-chat", model_uid="venv2", virtual_env_packages=[PACKAGE], script_import="inflection"
    )
    assert say(server, "venv2").split()[2] == module_file
    assert server.http.get("/v1/models/venv2").json()["replicas"][0]["warm"] is True
    assert "virtual environment" in server.log() and server.log().count("ready in") == 1

    busy = xinf("virtualenvs", "--remove", env.name, "-e", server.url)
    assert busy.returncode == 1 and "used by a running model" in busy.stderr
    server.http.delete("/v1/models/venv")
    server.http.delete("/v1/models/venv2")
    removed = xinf("virtualenvs", "--remove", env.name, "-e", server.url)
    assert removed.returncode == 0, removed.stderr
    assert not env.exists()
    assert xinf("virtualenvs", "-e", server.url).stdout.strip() == "no virtual environments"


def test_failed_install_is_a_clear_launch_error(start_server, tmp_path: Path) -> None:
    server: ServerProcess = start_server(tmp_path / "home")
    response = server.http.post(
        "/v1/models", json={"model_name": "xinf-test-chat", "virtual_env_packages": ["inflection==999.0"]}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "virtual_env_packages"
    assert error["message"].startswith("could not install inflection==999.0 into the virtual environment: ERROR:")
    assert "inflection==999.0" in error["message"].split(":", 1)[1]
    assert not list((tmp_path / "home" / "virtualenvs").glob("*"))  # nothing half-built left behind


def test_disabled_virtual_envs_refuse_packages(start_server) -> None:
    server: ServerProcess = start_server(env={"XINFERENCE_ENABLE_VIRTUAL_ENV": "0"})
    response = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "virtual_env_packages": [PACKAGE]})
    assert response.status_code == 400
    assert "XINFERENCE_ENABLE_VIRTUAL_ENV=0" in response.json()["error"]["message"]
    # enable_virtual_env on the launch wins over the server's default.
    server.launch(
        model_name="xinf-test-chat", enable_virtual_env=True, virtual_env_packages=[PACKAGE], script_import="inflection"
    )
    assert say(server, "xinf-test-chat").startswith("inflection 0.5.1 ")


@pytest.mark.parametrize("skip", ["1", "0"])
def test_skip_installed(start_server, tmp_path: Path, skip: str) -> None:
    # msgspec is in the server's environment: skipped with 1, installed into the environment with 0.
    home = tmp_path / "home"
    server: ServerProcess = start_server(home, env={"XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED": skip})
    server.launch(model_name="xinf-test-chat", virtual_env_packages=["msgspec", PACKAGE], script_import="msgspec")
    module_file = Path(say(server, "xinf-test-chat").split()[2])
    assert module_file.is_relative_to(home / "virtualenvs") == (skip == "0")
