"""Model families: the built-in ones shipped as data, and users' registrations.

A family (``qwen2.5-instruct``) lists specs by format and size, each with its
quantizations and where to get it.  ``Registry.candidates`` turns a launch's
name/format/size/quantization into concrete ``ModelSpec`` s, best first.
Registrations made with ``persist`` are stored as one JSON file each under
``XINFERENCE_HOME/registrations`` and survive restarts.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from xinf.errors import Conflict, InvalidRequest, NotFound
from xinf.storage import atomic_write
from xinf.types import ABILITIES, ModelSource, ModelSpec, ModelType
from xinf.types import MODEL_TYPES as MODEL_TYPES  # re-exported: the routes list them

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: '$' would let a trailing newline through


class FamilySpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    format: str
    size_in_billions: float | None = None
    quantizations: list[str] = msgspec.field(default_factory=lambda: ["none"])
    huggingface: str | None = None
    modelscope: str | None = None
    csghub: str | None = None
    file: str | None = None
    # A GGUF split in parts (Xinference's model_file_name_split_template and quantization_parts):
    # for a quantization listed in quantization_parts, the parts are file_split with {part} filled in.
    file_split: str | None = None
    quantization_parts: dict[str, list[str]] | None = None
    package: str | None = None
    path: str | None = None
    multimodal_projectors: list[str] = msgspec.field(default_factory=list)  # GGUF vision models' mmproj files


class Family(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    specs: list[FamilySpec]
    model_type: ModelType = "LLM"
    abilities: list[str] = msgspec.field(default_factory=lambda: ["chat", "generate"])
    family: str | None = None
    context_length: int | None = None
    chat_template: str | None = None  # the registration's own: replaces the model's template
    # The catalogue's template (Xinference's family template): only for a model that has none of its own.
    fallback_chat_template: str | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    reasoning_start_tag: str | None = None
    reasoning_end_tag: str | None = None
    tool_parser: str | None = None  # the tool-call format of its output (Xinference's tool_parser)
    languages: list[str] = msgspec.field(default_factory=list)
    dimensions: int | None = None  # embedding models: the vector size
    # embedding models trained so that a prefix of the vector is an embedding (the request's ``dimensions``)
    matryoshka: bool = False
    description: str = ""
    checked: str | None = None  # where the hub ids, sizes and file names were checked
    builtin: bool = False

    def concrete(self, spec: FamilySpec, quantization: str) -> ModelSpec:
        def fill(value: str | None) -> str | None:
            return value.replace("{quantization}", quantization) if value else value

        file, parts = fill(spec.file), None
        split = (spec.quantization_parts or {}).get(quantization)
        if spec.file_split and split:
            parts = [fill(spec.file_split).replace("{part}", part) for part in split]  # type: ignore[union-attr]
            file = parts[0]
        path = fill(spec.path)
        if path and file and spec.format == "ggufv2" and not path.lower().endswith(".gguf"):
            path = str(Path(path) / file)  # Xinference's model_uri names the directory of the GGUF files

        return ModelSpec(
            name=self.name,
            family=self.family or self.name,
            model_type=self.model_type,
            abilities=list(self.abilities),
            format=spec.format,
            size_in_billions=spec.size_in_billions,
            quantization=quantization,
            context_length=self.context_length,
            chat_template=self.chat_template,
            fallback_chat_template=self.fallback_chat_template,
            stop=list(self.stop),
            reasoning_start_tag=self.reasoning_start_tag,
            reasoning_end_tag=self.reasoning_end_tag,
            tool_parser=self.tool_parser,
            matryoshka=self.matryoshka,
            source=ModelSource(
                huggingface=fill(spec.huggingface),
                modelscope=fill(spec.modelscope),
                csghub=fill(spec.csghub),
                file=file,
                parts=parts,
                package=spec.package,
                path=path,
            ),
            description=self.description,
            builtin=self.builtin,
            multimodal_projectors=list(spec.multimodal_projectors),
        )


def parse_family(data: dict[str, Any], model_type: str | None = None) -> Family:
    """A family from our JSON form or from Xinference's model JSON (``model_type``: the type it is registered as)."""
    if "model_name" in data and "name" not in data:
        from xinf import catalog

        try:
            data = catalog.convert(data, model_type)
        except catalog.Skip as exc:
            raise InvalidRequest(f"model {data.get('model_name')!r} cannot be registered here: {exc}") from None
        except (AttributeError, TypeError, ValueError, KeyError) as exc:  # a field of the wrong type
            raise InvalidRequest(f"invalid model registration: {type(exc).__name__}: {exc}") from None
    try:
        family = msgspec.convert(data, Family, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid model registration: {exc}") from None
    if not _NAME.match(family.name):
        raise InvalidRequest(
            f"invalid model name {family.name!r}: use letters, digits, '.', '_' and '-' (at most 128)",
            param="name",
        )
    if not family.specs:
        raise InvalidRequest(f"model {family.name!r} has no specs", param="specs")
    unknown = [a for a in family.abilities if a not in ABILITIES]
    if unknown:
        raise InvalidRequest(f"unknown abilities {unknown}; known: {', '.join(ABILITIES)}", param="abilities")
    if bool(family.reasoning_start_tag) != bool(family.reasoning_end_tag):
        raise InvalidRequest("give both reasoning_start_tag and reasoning_end_tag, or neither")
    return family


def _size(value: Any) -> float | None:
    """Xinference writes sizes as 7, "7" or "0_5"."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace("_", "."))
    except ValueError:
        raise InvalidRequest(f"invalid size_in_billions {value!r}", param="model_size_in_billions") from None


def same_size(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


class Registry:
    """Built-in families plus registrations; the persistent ones live under ``home``."""

    def __init__(self, home: Path | None):
        self.home = home
        self.families: dict[str, Family] = {}
        for fam in _builtin_families():
            self.families[fam.name.lower()] = fam
        if home is not None:
            self._load_persisted()

    # ------------------------------------------------------------ lookups

    def get(self, name: str) -> Family:
        family = self.families.get(name.lower())
        if family is None:
            raise NotFound(f"model {name!r} is neither built in nor registered", param="model_name")
        return family

    def list_families(self, *, builtin: bool | None = None, model_type: str | None = None) -> list[Family]:
        """The families (built-in, registered or both; of one model type or all), sorted by name."""
        return sorted(
            (
                f
                for f in self.families.values()
                if (builtin is None or f.builtin == builtin) and (model_type is None or f.model_type == model_type)
            ),
            key=lambda f: f.name.lower(),
        )

    def candidates(
        self,
        name: str,
        *,
        format: str | None = None,
        size_in_billions: float | None = None,
        quantization: str | None = None,
    ) -> list[ModelSpec]:
        """Concrete specs for a launch, in the family's order (its preference)."""
        family = self.get(name)
        out = []
        for spec in family.specs:
            if format and spec.format.lower() != format.lower():
                continue
            if size_in_billions is not None and not same_size(spec.size_in_billions, size_in_billions):
                continue
            for quant in spec.quantizations:
                if quantization and quant.lower() != quantization.lower():
                    continue
                out.append(family.concrete(spec, quant))
        if not out:
            wanted = ", ".join(
                f"{k}={v}"
                for k, v in (("format", format), ("size", size_in_billions), ("quantization", quantization))
                if v is not None
            )
            have = "; ".join(
                f"{s.format} {s.size_in_billions or '-'}B [{', '.join(s.quantizations)}]" for s in family.specs
            )
            raise NotFound(f"model {family.name!r} has no spec with {wanted}; it has: {have}", param="model_name")
        return out

    # ------------------------------------------------------------ registrations

    def register(self, family: Family, *, persist: bool) -> None:
        existing = self.families.get(family.name.lower())
        if existing is not None:
            kind = "a built-in model" if existing.builtin else "already registered"
            raise Conflict(f"model name {family.name!r} is {kind}", param="name")
        family.builtin = False
        if persist and self.home is not None:
            atomic_write(self._path(family), msgspec.json.format(msgspec.json.encode(family)))
        self.families[family.name.lower()] = family

    def unregister(self, name: str) -> Family:
        family = self.get(name)
        if family.builtin:
            raise InvalidRequest(f"model {family.name!r} is built in and cannot be unregistered", param="name")
        if self.home is not None:
            self._path(family).unlink(missing_ok=True)
        return self.families.pop(name.lower())

    def _path(self, family: Family) -> Path:
        assert self.home is not None
        return self.home / "registrations" / family.model_type / f"{family.name}.json"

    def _load_persisted(self) -> None:
        assert self.home is not None
        for path in sorted((self.home / "registrations").glob("*/*.json")):
            try:
                family = parse_family(json.loads(path.read_bytes()))
            except (OSError, ValueError, InvalidRequest) as exc:
                log.error("skipping unreadable registration %s: %s", path, exc)
                continue
            family.builtin = False
            if family.name.lower() in self.families:
                log.error("skipping registration %s: name %r is taken", path, family.name)
                continue
            self.families[family.name.lower()] = family


def _builtin_families() -> list[Family]:
    families = []
    for model_type in MODEL_TYPES:
        name = "llm.json" if model_type == "LLM" else f"{model_type}.json"
        data = resources.files("xinf.families").joinpath(name).read_bytes()
        for family in msgspec.json.decode(data, type=list[Family]):
            family.builtin = True
            family.model_type = model_type  # type: ignore[assignment]
            families.append(family)
    return families
