"""Launch inputs are data: pip arguments, environment variables and names against a real `xinf serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xinf.errors import InvalidRequest
from xinf.launchinputs import check_envs, check_packages, unsafe_env
from xinf.settings import Settings
from xinf.testing.server import ServerProcess

SECRET_LINE = "root:$6$not-for-your-eyes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("inputs") / "home") as server:
        yield server


def launch(server: ServerProcess, **body: object):  # type: ignore[no-untyped-def]
    return server.http.post("/v1/models", json={"model_name": "xinf-test-chat", **body})


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*")) if path.exists() else set()


@pytest.mark.parametrize(
    "package",
    [
        "-r{secret}",
        "--requirement={secret}",
        "--log={outside}/pip.log",
        "--index-url=http://127.0.0.1:1/simple",
        "-e.",
        "{outside}",
        "./local-project",
        "pkg @ file://{outside}",
        "pkg @ https://example.invalid/pkg.tar.gz",
        "https://example.invalid/pkg.whl",
        "pkg==1.0; --log=x",
        "pkg==1.0 --log=x",
    ],
)
def test_pip_arguments_are_refused_and_write_nothing(server: ServerProcess, tmp_path: Path, package: str) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(SECRET_LINE + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    before = files_under(outside) | files_under(server.home / "virtualenvs")
    entry = package.format(secret=secret, outside=outside)
    answer = launch(server, model_uid="pip", virtual_env_packages=["tiny==1.0", entry])
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "virtual_env_packages[1]"
    assert SECRET_LINE not in answer.text
    assert files_under(outside) | files_under(server.home / "virtualenvs") == before


def test_find_links_come_from_the_server(server: ServerProcess) -> None:
    answer = launch(server, model_uid="links", virtual_env_packages=["tiny"], virtual_env_find_links=["/tmp"])
    assert answer.status_code == 400
    assert "XINF_VIRTUAL_ENV_FIND_LINKS" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("envs", "param"),
    [
        ({"LD_PRELOAD": "/tmp/evil.so"}, "envs.LD_PRELOAD"),
        ({"LD_LIBRARY_PATH": "/tmp"}, "envs.LD_LIBRARY_PATH"),
        ({"DYLD_INSERT_LIBRARIES": "/tmp/x.dylib"}, "envs.DYLD_INSERT_LIBRARIES"),
        ({"PYTHONPATH": "/tmp"}, "envs.PYTHONPATH"),
        ({"PYTHONHOME": "/tmp"}, "envs.PYTHONHOME"),
        ({"PYTHONSTARTUP": "/tmp/x.py"}, "envs.PYTHONSTARTUP"),
        ({"PATH": "/tmp"}, "envs.PATH"),
        ({"BAD=NAME": "x"}, "envs.BAD=NAME"),
        ({"1ABC": "x"}, "envs.1ABC"),
        ({"": "x"}, "envs."),
        ({"OK": "nul\u0000inside"}, "envs.OK"),
        ({"BIG": "x" * 3_000_000}, "envs"),
        ({f"V{i}": "y" * 1000 for i in range(100)}, "envs"),
    ],
)
def test_bad_envs_are_400(server: ServerProcess, envs: dict[str, str], param: str) -> None:
    answer = launch(server, model_uid="envs", envs=envs)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["param"] == param
    assert server.http.get("/v1/models").json()["data"] == []


def test_ordinary_envs_reach_the_replica(server: ServerProcess) -> None:
    answer = launch(
        server, model_uid="fine", envs={"MY_SETTING": "on", "PYTHONUNBUFFERED": "1"}, script_env="MY_SETTING"
    )
    assert answer.status_code == 200, answer.text
    reply = server.http.post(
        "/v1/chat/completions", json={"model": "fine", "messages": [{"role": "user", "content": "x"}]}
    )
    assert reply.json()["choices"][0]["message"]["content"] == "MY_SETTING=on"
    assert server.http.delete("/v1/models/fine").status_code == 200


def test_an_operator_may_allow_loader_variables(start_server) -> None:
    server: ServerProcess = start_server(env={"XINF_LAUNCH_ALLOW_UNSAFE_ENVS": "1"})
    answer = launch(server, model_uid="u", envs={"LD_BIND_NOW": "1"}, script_env="LD_BIND_NOW")
    assert answer.status_code == 200, answer.text
    reply = server.http.post(
        "/v1/chat/completions", json={"model": "u", "messages": [{"role": "user", "content": "x"}]}
    )
    assert reply.json()["choices"][0]["message"]["content"] == "LD_BIND_NOW=1"


@pytest.mark.parametrize("name", ["trail\n", "a/b", "../x", ".hidden", "x" * 129, "sp ace", "ünï"])
def test_names_follow_the_rule(server: ServerProcess, name: str) -> None:
    answer = launch(server, model_uid=name)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "model_uid"
    family = {"model_name": name, "model_format": "test", "model_specs": [{"model_format": "test", "model_id": "x"}]}
    registered = server.http.post("/v1/model_registrations/LLM", json={"model": family, "persist": True})
    assert registered.status_code == 400, registered.text
    assert registered.json()["error"]["param"] == "name"
    assert not any((server.home / "registrations").rglob("*.json"))


def test_rules_directly() -> None:
    settings = Settings.from_env({})
    assert unsafe_env("ld_preload") and unsafe_env("PYTHONWARNINGS") and not unsafe_env("PYTHONUNBUFFERED")
    assert not unsafe_env("CUDA_VISIBLE_DEVICES") and not unsafe_env("HF_HOME")
    check_packages(["numpy>=1.26", "pkg[extra]==1.0; python_version>'3.8'"], None, settings)
    check_envs({"A": "1"}, settings)
    with pytest.raises(InvalidRequest):
        check_packages(["pkg @ https://x.invalid/p.whl"], None, settings)
    check_packages(
        ["pkg @ https://x.invalid/p.whl"], ["/wheels"], Settings.from_env({"XINF_VIRTUAL_ENV_ALLOW_URLS": "1"})
    )
