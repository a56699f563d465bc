"""Xinference's model JSON, read as xinf families: custom registrations and its built-in catalogue files.

Both versions of the format are read, for every model type:

- version 1 (and image/audio/flexible today): hub fields at the top level
  (``model_id``, ``model_uri``, ``model_hub``), or specs with ``quantizations``;
- version 2: ``model_specs``, each either flat (``model_hub``, ``model_id``,
  ``model_uri``, ``quantization`` or ``quantizations``) as in the custom-model
  documentation, or with ``model_src: {hub: {model_id, quantizations, ...}}`` as
  in Xinference's own ``llm_family.json`` and ``model_spec.json`` files.

GGUF specs keep ``model_file_name_template``, and split files keep
``model_file_name_split_template`` with ``quantization_parts``; vision models
keep their ``multimodal_projectors`` (llama.cpp's mmproj files).  A local
``model_uri`` that is a directory is joined with the file name template.
``convert`` says why when an entry cannot be served here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xinf.types import ABILITIES

HUBS = ("huggingface", "modelscope", "csghub")
RERANK_KINDS = ("normal", "LLM-based", "LLM-based layerwise", "unknown")
# Xinference abilities -> ours ("hybrid": thinking can be switched per request, which is our "reasoning")
ABILITY_MAP = {"hybrid": "reasoning", "embedding": "embed"}


class Skip(Exception):
    """An entry that cannot be served here; the message says why."""


def detect_type(data: dict[str, Any], hint: str | None = None) -> str:
    """The Xinference model type of an entry: the hint (URL, file name) when given, else from its fields."""
    if hint:
        return hint
    if "dimensions" in data:
        return "embedding"
    if data.get("type") in RERANK_KINDS and "model_ability" not in data:
        return "rerank"
    abilities = set(data.get("model_ability") or [])
    if abilities & {"text2audio", "audio2text", "text2audio_zero_shot"}:
        return "audio"
    if abilities & {"text2image", "image2image", "inpainting", "ocr"} or "controlnet" in data:
        return "image"
    if "launcher" in data:
        return "flexible"
    return "LLM"


def convert(data: dict[str, Any], model_type: str | None = None, *, keep_template: bool = True) -> dict[str, Any]:
    """An xinf family (the registry's JSON form) from one Xinference entry; raises ``Skip`` with the reason.

    ``keep_template=False`` (catalogue entries) keeps Xinference's chat template
    only as a fallback for a model without one: the model's own stays in use.
    A registration's template is its author's choice and replaces the model's.
    """
    if not isinstance(data, dict) or not data.get("model_name"):
        raise Skip("not a model entry (no model_name)")
    kind = detect_type(data, model_type)
    abilities = _abilities(data, kind)
    specs = [s for raw in _raw_specs(data) for s in _specs(raw, data.get("model_family"))]
    if not specs:
        raise Skip("no spec with a Hugging Face, ModelScope or CSGHub id or a local model_uri")
    family: dict[str, Any] = {
        "name": data["model_name"],
        "model_type": kind,
        "abilities": abilities,
        "family": data.get("model_family"),
        "context_length": data.get("context_length") or data.get("max_tokens"),
        "chat_template": data.get("chat_template") if keep_template else None,
        "fallback_chat_template": None if keep_template else data.get("chat_template"),
        "stop": data.get("stop") or [],
        "reasoning_start_tag": data.get("reasoning_start_tag"),
        "reasoning_end_tag": data.get("reasoning_end_tag"),
        "tool_parser": data.get("tool_parser"),
        "languages": data.get("model_lang") or data.get("language") or [],
        "dimensions": data.get("dimensions"),
        "description": data.get("model_description") or "",
        "specs": specs,
    }
    if bool(family["reasoning_start_tag"]) != bool(family["reasoning_end_tag"]):
        family["reasoning_start_tag"] = family["reasoning_end_tag"] = None
    return {k: v for k, v in family.items() if v not in (None, [], "")}


def _abilities(data: dict[str, Any], kind: str) -> list[str]:
    if kind == "embedding":
        return ["embed"]
    if kind == "rerank":
        return ["rerank"]
    raw = data.get("model_ability") or (["chat", "generate"] if kind == "LLM" else [])
    if isinstance(raw, str):
        raw = [raw]
    out: list[str] = []
    unknown = []
    for ability in raw:
        mapped = ABILITY_MAP.get(ability, ability)
        if mapped not in ABILITIES:
            unknown.append(ability)
        elif mapped not in out:
            out.append(mapped)
    if unknown:
        raise Skip(f"abilities {unknown} are not served here (served: {', '.join(ABILITIES)})")
    return out


def _raw_specs(data: dict[str, Any]) -> list[dict[str, Any]]:
    specs = data.get("model_specs")
    if specs:
        return [s for s in specs if isinstance(s, dict)]
    # Version 1 (and image/audio entries): the one spec's fields sit at the top level.
    if any(data.get(k) for k in ("model_id", "model_uri")):
        return [{k: data.get(k) for k in ("model_id", "model_uri", "model_hub", "model_format", "quantization")}]
    return []


def _specs(raw: dict[str, Any], family: str | None) -> list[dict[str, Any]]:
    """Our specs for one Xinference spec: one per distinct set of hub files (hubs that agree share one)."""
    fmt = raw.get("model_format") or "pytorch"
    size = _size(raw.get("model_size_in_billions"))
    sources = raw.get("model_src")
    if not isinstance(sources, dict):
        sources = {(raw.get("model_hub") or "huggingface").lower(): raw}
    grouped: dict[str, dict[str, Any]] = {}
    for hub, src in sources.items():
        if not isinstance(src, dict):
            continue
        quants = src.get("quantizations") or raw.get("quantizations")
        if not quants:
            quants = [src.get("quantization") or raw.get("quantization") or "none"]
        files = {
            "quantizations": list(quants),
            "file": src.get("model_file_name_template") or raw.get("model_file_name_template"),
            "file_split": src.get("model_file_name_split_template") or raw.get("model_file_name_split_template"),
            "quantization_parts": src.get("quantization_parts") or raw.get("quantization_parts"),
            "multimodal_projectors": src.get("multimodal_projectors") or raw.get("multimodal_projectors"),
        }
        uri = src.get("model_uri") or raw.get("model_uri")
        if isinstance(uri, str) and uri:
            files["path"] = _local(uri)
        elif hub in HUBS and src.get("model_id"):
            files[hub] = src["model_id"]
        else:
            continue  # openmind_hub and other hubs xinf does not download from
        parts = files["quantization_parts"]
        if files["file_split"] and isinstance(parts, dict):
            files["quantizations"] = list(quants) + [q for q in parts if q not in quants]  # split-only ones too
        key = json.dumps({k: v for k, v in files.items() if k not in HUBS}, sort_keys=True)
        grouped.setdefault(key, {"format": fmt, "size_in_billions": size}).update(
            {k: v for k, v in files.items() if v is not None}
        )
    if fmt == "ggufv2":
        for spec in grouped.values():
            if not spec.get("file") and not spec.get("path"):
                raise Skip(f"a ggufv2 spec of family {family or '?'} has no model_file_name_template")
    return [{k: v for k, v in s.items() if v is not None} for s in grouped.values()]


def _local(uri: str) -> str:
    """A local ``model_uri``; a GGUF directory is joined with the file name template when the spec is made."""
    return uri.removeprefix("file://")


def _fill(template: str, quantization: str, part: str | None = None) -> str:
    out = template.replace("{quantization}", quantization)
    return out.replace("{part}", part) if part is not None else out


def _size(value: Any) -> float | None:
    """Xinference writes sizes as 7, "7", "0_5" or "1_5"."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace("_", "."))
    except ValueError:
        raise Skip(f"invalid model_size_in_billions {value!r}") from None


# ---------------------------------------------------------------- files


def type_of_file(path: Path) -> str | None:
    """Xinference's catalogue files say their type by name and folder (``model/rerank/model_spec.json``)."""
    text = str(path).lower().replace("\\", "/")
    if "llm_family" in path.name.lower() or "/llm/" in text:
        return "LLM"
    for kind in ("embedding", "rerank", "audio", "image", "video", "flexible"):
        if kind in path.name.lower() or f"/{kind}/" in text:
            return kind
    return None


def read_entries(path: Path) -> list[tuple[Path, dict[str, Any], str | None]]:
    """Every entry of a JSON file, or of every JSON file under a directory, with the type its file implies."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    out: list[tuple[Path, dict[str, Any], str | None]] = []
    for file in files:
        data = json.loads(file.read_bytes())
        entries = data if isinstance(data, list) else [data]
        out.extend((file, e, type_of_file(file)) for e in entries)
    return out
