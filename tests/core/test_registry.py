"""Built-in families, registrations, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xinf.errors import Conflict, InvalidRequest, NotFound
from xinf.registry import Registry, parse_family

CUSTOM = {
    "name": "my-llama",
    "abilities": ["chat", "generate"],
    "context_length": 4096,
    "specs": [{"format": "ggufv2", "size_in_billions": 1, "quantizations": ["Q4_K_M"], "path": "/models/x.gguf"}],
}


def test_builtin_families_resolve_with_quantization_filled_in() -> None:
    registry = Registry(None)
    spec = registry.candidates("qwen2.5-instruct", format="ggufv2", size_in_billions=0.5, quantization="q8_0")[0]
    assert spec.source.huggingface == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert spec.source.file == "qwen2.5-0.5b-instruct-q8_0.gguf"
    gptq = registry.candidates("Qwen2.5-Instruct", format="gptq", quantization="Int8")[0]
    assert gptq.source.huggingface == "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8"
    assert registry.candidates("qwen3")[0].reasoning_end_tag == "</think>"
    assert {f.name for f in registry.list_families(model_type="embedding")} >= {"all-MiniLM-L6-v2"}


def test_unknown_spec_lists_what_exists() -> None:
    with pytest.raises(NotFound) as info:
        Registry(None).candidates("qwen3", format="ggufv2", size_in_billions=3)
    assert "ggufv2 0.6B [Q8_0]" in info.value.message
    with pytest.raises(NotFound):
        Registry(None).candidates("no-such-family")


def test_persisted_registration_survives_a_new_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(parse_family(dict(CUSTOM)), persist=True)
    again = Registry(tmp_path)
    assert again.get("my-llama").specs[0].path == "/models/x.gguf"
    assert not again.get("my-llama").builtin
    again.unregister("my-llama")
    assert "my-llama" not in {f.name for f in Registry(tmp_path).list_families()}


def test_unpersisted_registration_is_forgotten(tmp_path: Path) -> None:
    Registry(tmp_path).register(parse_family(dict(CUSTOM)), persist=False)
    assert not list(tmp_path.rglob("*.json"))


def test_names_are_unique_and_builtins_protected(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(parse_family(dict(CUSTOM)), persist=False)
    with pytest.raises(Conflict):
        registry.register(parse_family(dict(CUSTOM)), persist=False)
    with pytest.raises(Conflict, match="built-in"):
        registry.register(parse_family({**CUSTOM, "name": "qwen3"}), persist=False)
    with pytest.raises(InvalidRequest, match="built in"):
        registry.unregister("qwen3")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "../evil"}, "invalid model name"),
        ({"specs": []}, "has no specs"),
        ({"abilities": ["fly"]}, "unknown abilities"),
        ({"reasoning_start_tag": "<think>"}, "both"),
        ({"context_length": "long"}, "context_length"),
    ],
)
def test_bad_registrations_are_refused(change: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_family({**CUSTOM, **change})


def test_xinference_custom_model_json_is_understood() -> None:
    family = parse_family(
        {
            "version": 2,
            "context_length": 2048,
            "model_name": "custom-qwen",
            "model_lang": ["en"],
            "model_ability": ["chat"],
            "model_family": "qwen2.5-instruct",
            "model_specs": [
                {
                    "model_format": "pytorch",
                    "model_size_in_billions": "0_5",
                    "quantization": "none",
                    "model_uri": "file:///data/qwen",
                }
            ],
        }
    )
    assert family.name == "custom-qwen" and family.family == "qwen2.5-instruct"
    spec = family.concrete(family.specs[0], "none")
    assert spec.size_in_billions == 0.5 and spec.source.path == "/data/qwen" and spec.abilities == ["chat"]


def test_a_corrupt_registration_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "registrations" / "LLM"
    folder.mkdir(parents=True)
    (folder / "half.json").write_text('{"name": "half", "spe')
    (folder / "ok.json").write_text(json.dumps(CUSTOM))
    registry = Registry(tmp_path)
    assert registry.get("my-llama")
    assert "half.json" in caplog.text
