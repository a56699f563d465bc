"""Per-model virtual environments under ``XINFERENCE_HOME/virtualenvs``.

When a launch needs packages (``virtual_env_packages`` / ``--virtual-env-package``,
or ``VIRTUAL_ENV_PACKAGES`` declared by the engine plugin's module) and
virtual environments are enabled (``XINFERENCE_ENABLE_VIRTUAL_ENV``, or the
launch's ``enable_virtual_env``), its replicas run with the interpreter of an
environment holding those packages.  A launch without packages runs in the
server's own environment: creating an environment costs seconds, so it is
only done when there is something to install.

The environment sees the server's site-packages *after* its own (a ``.pth``
file), so xinf and the engine plugin import there, and what the environment
installs takes precedence.  ``XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED=1`` (the
default) lets pip skip requirements the server's environment already
satisfies; ``0`` installs every requested package (and its dependencies)
into the environment anyway (``pip --ignore-installed``).

Environments are keyed by their packages, so launches asking for the same
packages share one, and a second launch starts without installing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xinf.errors import Conflict, LaunchError, NotFound
from xinf.settings import Settings

log = logging.getLogger(__name__)
META = "xinf-venv.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: '$' would let a trailing newline through


def root(settings: Settings) -> Path:
    return settings.home / "virtualenvs"


def wanted(
    settings: Settings, enable: bool | None, engine_packages: list[str], extra: list[str] | None
) -> list[str] | None:
    """The packages to install for a launch, or None when it runs in the server's environment."""
    enabled = settings.enable_virtual_env if enable is None else enable
    if extra and not enabled:
        raise LaunchError(
            "virtual_env_packages needs a virtual environment, and they are disabled "
            "(XINFERENCE_ENABLE_VIRTUAL_ENV=0 or enable_virtual_env=false)",
            param="virtual_env_packages",
        )
    packages = [*engine_packages, *(extra or [])]
    if not enabled or not packages:
        return None
    return packages


def name_for(engine: str, packages: list[str], find_links: list[str], settings: Settings) -> str:
    key = json.dumps(
        [sorted(packages), sorted(find_links), settings.virtual_env_skip_installed, sys.version, sys.prefix]
    )
    return f"{engine}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def python_of(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(settings: Settings, engine: str, packages: list[str], find_links: list[str] | None = None) -> str:
    """The interpreter of an environment with ``packages``, created (once) if needed."""
    find_links = find_links or []
    name = name_for(engine, packages, find_links, settings)
    env = root(settings) / name
    if (env / META).exists():
        return str(python_of(env))
    building = root(settings) / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        _run([sys.executable, "-m", "venv", "--without-pip", str(building)], "create the virtual environment")
        purelib = _purelib(python_of(building))
        # The server's packages after the environment's own: xinf and the engine plugin import from there.
        lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages() if Path(p).is_dir()]
        (Path(purelib) / "_xinf_server_site.pth").write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "pip", "--python", str(python_of(building)), "install"]
        command += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        if not settings.virtual_env_skip_installed:
            command.append("--ignore-installed")
        if settings.virtual_env_index_url:
            command += ["--index-url", settings.virtual_env_index_url]
        for link in [*settings.virtual_env_find_links, *find_links]:  # the launch's own: only when allowed
            command += ["--find-links", link]
        _run([*command, *packages], f"install {' '.join(packages)} into the virtual environment")
        meta = {
            "name": name,
            "engine": engine,
            "packages": packages,
            "find_links": find_links,
            "skip_installed": settings.virtual_env_skip_installed,
            "python": sys.version.split()[0],
            "created": int(time.time()),
        }
        (building / META).write_text(json.dumps(meta, indent=2))
        # venv writes absolute paths into its scripts and pyvenv.cfg; python itself finds its prefix from
        # the location of bin/python, so a renamed environment works for `bin/python -m ...`.
        if env.exists():
            shutil.rmtree(building)  # another launch built the same one meanwhile
        else:
            os.replace(building, env)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("virtual environment %s ready in %.1fs: %s", name, time.monotonic() - started, " ".join(packages))
    return str(python_of(env))


def _purelib(python: Path) -> str:
    out = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "inspect it")
    path = out.strip().splitlines()[-1]
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _run(command: list[str], what: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        errors = [line for line in output if line.startswith("ERROR")] or output[-8:]
        raise LaunchError(f"could not {what}: " + " ".join(errors), param="virtual_env_packages")
    return done.stdout


def listing(settings: Settings, in_use: list[str]) -> list[dict[str, Any]]:
    out = []
    base = root(settings)
    for meta_path in sorted(base.glob(f"*/{META}")):
        env = meta_path.parent
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        out.append(
            {
                "name": env.name,
                "path": str(env),
                "python": str(python_of(env)),
                "engine": meta.get("engine"),
                "packages": meta.get("packages", []),
                "skip_installed": meta.get("skip_installed"),
                "created": meta.get("created"),
                "size": sum(p.stat().st_size for p in env.rglob("*") if p.is_file() and not p.is_symlink()),
                "in_use": str(python_of(env)) in in_use,
            }
        )
    return out


def remove(settings: Settings, name: str, in_use: list[str]) -> dict[str, Any]:
    if not _NAME.match(name):
        raise NotFound(f"no virtual environment {name!r}", param="name")
    env = root(settings) / name
    if not (env / META).exists():
        have = ", ".join(e["name"] for e in listing(settings, in_use)) or "none"
        raise NotFound(f"no virtual environment {name!r} (have: {have})", param="name")
    if str(python_of(env)) in in_use:
        raise Conflict(f"virtual environment {name!r} is used by a running model; terminate it first")
    shutil.rmtree(env)
    return {"name": name, "path": str(env)}
