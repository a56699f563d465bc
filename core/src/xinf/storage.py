"""Files under XINFERENCE_HOME, written so that a crash never leaves half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

STALE = 3600.0  # seconds: a temporary file this old belongs to no write still running


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: a temporary file beside it, fsync, then rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def sweep(home: Path, older_than: float = STALE) -> int:
    """Remove temporaries that interrupted writes left under ``home``: ``.NAME.*.tmp`` files of
    ``atomic_write`` and ``.NAME.PID.tmp`` directories of virtual environments being built."""
    removed = 0
    cutoff = time.time() - older_than
    for sub in ("registrations", "cache", "virtualenvs"):
        base = home / sub
        if not base.is_dir():
            continue
        for path in base.rglob(".*.tmp"):
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
