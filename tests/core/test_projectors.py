"""Multimodal projectors (llama.cpp's mmproj): which one a launch gets, and that downloads fetch it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from xinf import projectors
from xinf.downloads.select import select
from xinf.errors import InvalidRequest, LaunchError
from xinf.registry import Registry
from xinf.types import ModelSource, ModelSpec


@pytest.fixture(scope="module")
def gemma() -> ModelSpec:
    (spec, *_) = Registry(None).candidates("gemma-3-it", format="ggufv2", size_in_billions=4, quantization="Q4_K_M")
    return spec


def test_the_catalogue_lists_xinferences_projectors(gemma: ModelSpec) -> None:
    assert gemma.multimodal_projectors[0] == "mmproj-google_gemma-3-4b-it-f16.gguf"
    assert "vision" in gemma.abilities


def test_a_launch_gets_the_first_projector_unless_it_names_one(gemma: ModelSpec) -> None:
    assert projectors.choose(gemma, None, {}).source.projector == "mmproj-google_gemma-3-4b-it-f16.gguf"
    named = projectors.choose(gemma, "mmproj-google_gemma-3-4b-it-bf16.gguf", {})
    assert named.source.projector == "mmproj-google_gemma-3-4b-it-bf16.gguf"
    with pytest.raises(InvalidRequest) as info:
        projectors.choose(gemma, "mmproj-other.gguf", {})
    assert info.value.param == "multimodal_projector" and "mmproj-google_gemma-3-4b-it-f16.gguf" in info.value.message


def test_downloads_fetch_the_projector_with_the_weights(gemma: ModelSpec) -> None:
    spec = projectors.choose(gemma, None, {})
    repo = [spec.source.file or "", *spec.multimodal_projectors, "README.md"]
    assert select(repo, spec) == [spec.source.file, "mmproj-google_gemma-3-4b-it-f16.gguf"]
    with pytest.raises(LaunchError) as info:
        select([spec.source.file or ""], spec)
    assert "mmproj-google_gemma-3-4b-it-f16.gguf" in info.value.message


def test_a_model_given_by_path_takes_a_projector_beside_it_or_anywhere(tmp_path: Path) -> None:
    model, projector = tmp_path / "model.gguf", tmp_path / "mmproj.gguf"
    model.write_bytes(b"GGUF")
    projector.write_bytes(b"GGUF")
    spec = ModelSpec(name="local", format="ggufv2", source=ModelSource(path=str(model)))
    assert "vision" not in projectors.choose(spec, None, {}).abilities
    beside = projectors.choose(spec, "mmproj.gguf", {})
    assert "vision" in beside.abilities and projectors.local_file(beside) == str(projector)
    assert projectors.local_file(projectors.choose(spec, str(projector), {})) == str(projector)
    with pytest.raises(InvalidRequest) as info:
        projectors.choose(spec, "missing.gguf", {})
    assert "missing.gguf" in info.value.message
    assert "vision" in projectors.choose(spec, None, {"mmproj.path": str(projector)}).abilities  # llama.cpp's option


def test_a_local_copy_without_the_default_projector_is_served_as_text(gemma: ModelSpec, tmp_path: Path) -> None:
    (tmp_path / "google_gemma-3-4b-it-Q4_K_M.gguf").write_bytes(b"GGUF")
    local = msgspec.structs.replace(gemma, source=ModelSource(path=str(tmp_path / "google_gemma-3-4b-it-Q4_K_M.gguf")))
    assert projectors.choose(local, None, {}).source.projector is None


def test_only_gguf_models_take_a_projector() -> None:
    spec = ModelSpec(name="hf", format="pytorch")
    with pytest.raises(InvalidRequest) as info:
        projectors.choose(spec, "mmproj.gguf", {})
    assert "GGUF" in info.value.message
