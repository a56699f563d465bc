"""Where the tiny test models are cached, and how a generator puts one there safely.

Each generator (``tinymodels_rerank``, ``tinymodels_diffusers``) writes a model
directory; ``cached`` builds it under a temporary name and renames it into place,
so concurrent callers (parallel test processes) never see half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """``XINF_MODELS_CACHE``, else ``<repo>/.cache/models``."""
    return Path(os.environ.get("XINF_MODELS_CACHE") or HERE.parent / ".cache" / "models")


def cached(name: str, write: Callable[[Path], object]) -> Path:
    """The cached directory ``name``, built now by ``write(directory)`` if missing."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        write(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another builder: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
