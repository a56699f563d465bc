"""Launch inputs are data, not commands.

A launch carries strings that reach a process: environment variables of the
replica, and packages that pip installs.  Each is checked here before anything
runs, with a 400 that names the field and never quotes a file:

- names (model uids, registrations, virtual environments): ``NAME_RULE``,
  at most 128 characters, no trailing newline;
- ``envs``: names ``[A-Za-z_][A-Za-z0-9_]*``, no NUL in values, at most
  ``MAX_ENVS`` variables and ``XINF_MAX_ENV_BYTES`` bytes in all (the kernel
  refuses a process whose environment is too big: that was a 500);
  loader and interpreter variables (``LD_*``, ``DYLD_*``, ``PYTHONPATH``,
  ``PYTHONHOME`` ...: they run code in the replica) only with
  ``XINF_LAUNCH_ALLOW_UNSAFE_ENVS=1``;
- ``virtual_env_packages``: each a PEP 508 requirement (``packaging``), so no
  pip option (``-r FILE``, ``--log PATH``, ``--index-url``), no local path;
  ``name @ URL`` and the launch's own ``virtual_env_find_links`` only with
  ``XINF_VIRTUAL_ENV_ALLOW_URLS=1``. Index URLs and find-links come from the
  server's settings (``XINF_VIRTUAL_ENV_INDEX_URL``, ``XINF_VIRTUAL_ENV_FIND_LINKS``).
"""

from __future__ import annotations

import re
from typing import Any

from xinf.errors import InvalidRequest
from xinf.settings import Settings

NAME_RULE = "[A-Za-z0-9][A-Za-z0-9._-]*"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
MAX_ENVS = 256
MAX_PACKAGES = 64
MAX_REQUIREMENT = 512
# Variables that make a dynamic loader or an interpreter run other code.
UNSAFE_PREFIXES = ("LD_", "DYLD_", "PYTHON", "PERL5", "PERLLIB", "RUBY", "GCONV_", "MALLOC_", "NODE_")
UNSAFE_NAMES = frozenset({"PATH", "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS"})
SAFE_PYTHON = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER"}
)


def valid_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def check_name(name: str, param: str, what: str = "name") -> None:
    if not valid_name(name):
        raise InvalidRequest(
            f"invalid {what} {name[:140]!r}: {NAME_RULE} (letters, digits, '.', '_', '-'; at most 128 characters)",
            param=param,
        )


def unsafe_env(name: str) -> bool:
    upper = name.upper()
    if upper in SAFE_PYTHON:
        return False
    return upper in UNSAFE_NAMES or upper.startswith(UNSAFE_PREFIXES)


def check_envs(envs: dict[str, Any] | None, settings: Settings) -> None:
    if not envs:
        return
    if len(envs) > MAX_ENVS:
        raise InvalidRequest(f"{len(envs)} environment variables is over the limit of {MAX_ENVS}", param="envs")
    total = 0
    for name, value in envs.items():
        if not ENV_NAME.fullmatch(name):
            raise InvalidRequest(
                f"invalid environment variable name {name[:80]!r}: use [A-Za-z_][A-Za-z0-9_]*",
                param=f"envs.{name[:80]}",
            )
        if not isinstance(value, str) or "\0" in value:
            raise InvalidRequest(f"envs.{name} must be a string without NUL characters", param=f"envs.{name}")
        if unsafe_env(name) and not settings.launch_allow_unsafe_envs:
            raise InvalidRequest(
                f"envs.{name} changes what code the replica loads; the server's operator must allow it "
                "(XINF_LAUNCH_ALLOW_UNSAFE_ENVS=1)",
                param=f"envs.{name}",
                code="unsafe_env",
            )
        total += len(name.encode()) + len(value.encode()) + 2
    if total > settings.max_env_bytes:
        raise InvalidRequest(
            f"envs hold {total} bytes, over this server's limit of {settings.max_env_bytes} (XINF_MAX_ENV_BYTES)",
            param="envs",
        )


def check_packages(packages: list[str] | None, find_links: list[str] | None, settings: Settings) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    if find_links and not settings.virtual_env_allow_urls:
        raise InvalidRequest(
            "virtual_env_find_links come from the server's settings (XINF_VIRTUAL_ENV_FIND_LINKS); "
            "a launch may name its own only with XINF_VIRTUAL_ENV_ALLOW_URLS=1",
            param="virtual_env_find_links",
        )
    if not packages:
        return
    if len(packages) > MAX_PACKAGES:
        raise InvalidRequest(
            f"{len(packages)} packages is over the limit of {MAX_PACKAGES}", param="virtual_env_packages"
        )
    for i, entry in enumerate(packages):
        param = f"virtual_env_packages[{i}]"
        if not isinstance(entry, str) or not entry.strip() or len(entry) > MAX_REQUIREMENT:
            raise InvalidRequest(f"{param} must be a requirement of at most {MAX_REQUIREMENT} characters", param=param)
        shown = entry[:80]
        if entry.lstrip().startswith("-"):
            raise InvalidRequest(
                f"{param} {shown!r} is a pip option; only requirements like 'pkg==1.2' are taken", param=param
            )
        try:
            requirement = Requirement(entry)
        except InvalidRequirement:
            raise InvalidRequest(
                f"{param} {shown!r} is not a PEP 508 requirement (like 'pkg==1.2' or 'pkg[extra]>=1')", param=param
            ) from None
        if requirement.url and not settings.virtual_env_allow_urls:
            raise InvalidRequest(
                f"{param} installs from a URL or path; the server's operator must allow that "
                "(XINF_VIRTUAL_ENV_ALLOW_URLS=1)",
                param=param,
            )


def check_launch(req: Any, options: dict[str, Any], settings: Settings) -> None:
    """Every rule above for one launch request (``xinf.schemas.LaunchRequest`` and its engine options)."""
    from xinf.server.limits import check_depth

    if req.model_uid is not None:
        check_name(req.model_uid, "model_uid", "model_uid")
    check_envs(req.envs, settings)
    check_packages(req.virtual_env_packages, req.virtual_env_find_links, settings)
    check_depth(options, "options", settings)
