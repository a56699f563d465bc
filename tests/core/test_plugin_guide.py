"""The plugin guide, the contract and the plugin packages keep up with the hooks (datasette's meta-tests)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import pytest

from xinf import hookspecs
from xinf.devices import inventory
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.testing import contract
from xinf.testing import engine as test_engine
from xinf.types import EmbedRequest, GenerateRequest, Placement

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "xinf-ngram"
HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.PROJECT}_spec"))


def test_the_hooks_are_found() -> None:
    """The meta-tests below see the hookspecs (a new hook joins them by itself)."""
    assert {"match_model", "estimate_vram", "load", "generate", "embed", "unload"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_in_the_guide(hook: str) -> None:
    assert f"### `{hook}`" in GUIDE.read_text()


def test_every_hook_is_called_by_the_engine_contract() -> None:
    """Each hook is called as ``host.hook(engine, "<name>")`` somewhere in ``EngineContract``."""
    tree = ast.parse(inspect.getsource(contract.EngineContract))
    called = {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "hook"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
    }
    assert set(HOOKS) - called == set()


def test_the_guide_code_is_the_example_plugin() -> None:
    """Every code block of the tutorial headed ``# xinf-ngram/PATH`` is that file of examples/xinf-ngram, exactly:
    following the guide builds the plugin CI tests."""
    blocks = re.findall(r"```\w+\n# xinf-ngram/(\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    shown = {path: body for path, body in blocks}
    assert set(shown) >= {"pyproject.toml", "src/xinf_ngram/plugin.py", "src/xinf_ngram/engine.py"}
    for path, body in shown.items():
        assert body == (EXAMPLE / path).read_text(), f"docs/plugins.md shows another {path} than examples/xinf-ngram"


@pytest.mark.parametrize(
    "package", sorted(p.name for p in [*ROOT.glob("plugins/xinf-*"), *ROOT.glob("examples/xinf-*")])
)
def test_every_plugin_package_has_a_readme(package: str) -> None:
    folder = next(p for p in [ROOT / "plugins" / package, ROOT / "examples" / package] if p.is_dir())
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder} has no README.md"
    text = readme.read_text()
    assert text.startswith("# ") and "pip install" in text


# ---------------------------------------------------------------- XINF_TRACE_PLUGINS


def test_hooks_are_called_directly_unless_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XINF_TRACE_PLUGINS", raising=False)
    host = PluginHost()
    host.register("test", test_engine)
    assert host.hook("test", "load") is test_engine.load


def test_tracing_reports_each_hook_call_and_its_outcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XINF_TRACE_PLUGINS", "1")
    host = PluginHost()
    host.register("test", test_engine)
    spec = Registry(None).candidates("xinf-test-chat")[0]
    host.choose(spec, inventory())
    model = host.hook("test", "load")(spec=spec, options={"script": "one two three"}, placement=Placement())

    async def stream() -> str:
        request = GenerateRequest(prompt="hi", max_tokens=5)
        return "".join([c.text async for c in host.hook("test", "generate")(model=model, request=request)])

    assert asyncio.run(stream()) == "one two three"
    host.hook("test", "embed")(model=model, request=EmbedRequest(input=["a b"]))
    with pytest.raises(Exception, match="invalid test engine option"):
        host.hook("test", "load")(spec=spec, options={"no_such_option": 1}, placement=Placement())

    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines() if line.startswith("xinf trace [")]
    assert lines[0].startswith("test.match_model(spec=ModelSpec(name='xinf-test-chat'")
    assert re.fullmatch(r"test\.match_model -> EngineMatch\(engine='test', score=10, .*\) \(\d+\.\d ms\)", lines[1])
    assert lines[2].startswith("test.load(spec=ModelSpec(") and "options={'script': 'one two three'}" in lines[2]
    assert lines[3].startswith("test.load -> ")
    assert lines[4].startswith("test.generate(model=")
    assert re.fullmatch(r"test\.generate -> \d+ chunks, finish_reason=stop \(\d+\.\d ms\)", lines[5]), lines[5]
    assert lines[6].startswith("test.embed(") and lines[7].startswith("test.embed -> EmbedResult(")
    assert lines[8].startswith("test.load(") and lines[9].startswith("test.load raised LaunchError: invalid test")
