"""Loading engine plugins: isolation of broken ones, allowlist, deterministic ranking."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xinf import hookimpl
from xinf.devices import inventory
from xinf.errors import InvalidRequest
from xinf.plugins import PluginHost
from xinf.testing.server import ServerProcess
from xinf.types import EngineMatch, ModelSpec


def fake_plugin(score: int, reason: str = "") -> object:
    class Plugin:
        @hookimpl
        def match_model(self, spec: ModelSpec) -> EngineMatch:
            return EngineMatch(engine="ignored", score=score, reason=reason)

    return Plugin()


SPEC = ModelSpec(name="m", format="pytorch")


def test_ranking_does_not_depend_on_registration_order() -> None:
    for order in (["alpha", "beta", "gamma"], ["gamma", "beta", "alpha"]):
        host = PluginHost()
        scores = {"alpha": 5, "beta": 9, "gamma": 9}
        for name in order:
            host.register(name, fake_plugin(scores[name]))
        ranked = [m.engine for m in host.match(SPEC, inventory())]
        assert ranked == ["beta", "gamma", "alpha"]  # score first, then name
        assert host.choose(SPEC, inventory()).engine == "beta"


def test_refusals_carry_reasons_and_explicit_choice_is_checked() -> None:
    host = PluginHost()
    host.register("good", fake_plugin(3))
    host.register("picky", fake_plugin(0, "needs a GPU"))
    with pytest.raises(InvalidRequest, match="needs a GPU"):
        host.choose(SPEC, inventory(), engine="picky")
    with pytest.raises(InvalidRequest, match="unknown engine 'nope'"):
        host.choose(SPEC, inventory(), engine="nope")
    assert host.choose(SPEC, inventory(), engine="GOOD").engine == "good"


def test_explicit_only_engines_serve_when_named_and_are_never_chosen_otherwise() -> None:
    class SlowHere:
        @hookimpl
        def match_model(self, spec: ModelSpec) -> EngineMatch:
            return EngineMatch(engine="slow", score=0, reason="runs on the CPU here: name it", explicit_only=True)

    host = PluginHost()
    host.register("slow", SlowHere())
    with pytest.raises(InvalidRequest, match="slow: runs on the CPU here: name it"):
        host.choose(SPEC, inventory())
    assert host.choose(SPEC, inventory(), engine="slow").engine == "slow"
    host.register("other", fake_plugin(1))
    assert host.choose(SPEC, inventory()).engine == "other"


def test_no_engine_lists_every_reason() -> None:
    host = PluginHost()
    host.register("a", fake_plugin(0, "only GGUF"))
    host.register("b", fake_plugin(0, "only MLX"))
    with pytest.raises(InvalidRequest) as info:
        host.choose(SPEC, inventory())
    assert "a: only GGUF" in info.value.message and "b: only MLX" in info.value.message


def test_a_match_hook_that_raises_is_a_refusal_not_a_crash() -> None:
    class Exploding:
        @hookimpl
        def match_model(self, spec: ModelSpec) -> EngineMatch:
            raise RuntimeError("boom")

    host = PluginHost()
    host.register("exploding", Exploding())
    host.register("fine", fake_plugin(1))
    answers = {m.engine: m for m in host.match(SPEC, inventory())}
    assert not answers["exploding"].ok and "boom" in answers["exploding"].reason
    assert host.choose(SPEC, inventory()).engine == "fine"


def install_plugin(site: Path, dist: str, module: str, engine: str, source: str) -> None:
    """Install a plugin the way pip would, as far as entry points are concerned."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[xinf.engines]\n{engine} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    install_plugin(site, "broken-engine", "broken_engine", "broken", "import no_such_library_xyz\n")
    install_plugin(
        site,
        "wrong-engine",
        "wrong_engine",
        "wrong",
        """
        from xinf import hookimpl

        @hookimpl
        def match_model(spec, hardware, colour):  # not an argument of the hookspec
            return None
        """,
    )
    return site


def test_broken_plugins_are_reported_and_the_rest_work(plugin_site: Path, start_server) -> None:
    server: ServerProcess = start_server(env={"PYTHONPATH": str(plugin_site)})
    engines = {e["name"]: e for e in server.http.get("/v1/engines").json()["engines"]}
    assert engines["broken"]["ok"] is False
    assert "No module named 'no_such_library_xyz'" in engines["broken"]["error"]
    assert engines["broken"]["distribution"] == "broken-engine"
    assert engines["wrong"]["ok"] is False and "colour" in engines["wrong"]["error"]
    assert engines["test"]["ok"] is True
    server.launch(model_name="xinf-test-chat")
    reply = server.openai().chat.completions.create(
        model="xinf-test-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
    cli = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "engines", "-e", server.url], capture_output=True, text=True
    )
    assert cli.returncode == 0
    lines = {line.split()[0]: line for line in cli.stdout.splitlines()[1:]}
    assert "broken: ModuleNotFoundError: No module named 'no_such_library_xyz'" in lines["broken"]
    assert lines["test"].rstrip().endswith("ok")


def test_allowlist_loads_only_named_plugins(plugin_site: Path, start_server) -> None:
    server: ServerProcess = start_server(env={"PYTHONPATH": str(plugin_site), "XINF_PLUGINS": "test"})
    names = [e["name"] for e in server.http.get("/v1/engines").json()["engines"]]
    assert names == ["test"]
