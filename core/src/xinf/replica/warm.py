"""A pooled worker before it becomes a replica (``python -m xinf.replica --pool ENGINE SOCKET``).

It imports its engine plugin and what the plugin lists in ``WARM_IMPORTS``,
tells the server ``Idle`` and waits.  ``Adopt`` then gives it the replica's
environment and log file, and it goes on as a replica started cold would
(``xinf.replica.child.serve_stream``).  See ``xinf.warmpool`` for the rules.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import os
import sys
from collections.abc import Callable

from xinf.plugins import PluginHost
from xinf.replica import protocol as p

log = logging.getLogger("xinf.replica")
#: Libraries whose presence in the process means a GPU driver was loaded.  libcuda reads the visible devices only
#: when initialised (``cuInit``), so a mapped libcuda that says "not initialised" still takes the launch's devices;
#: the others are taken to have read them on loading.
DRIVERS = ("libcuda.so", "libamdhip64.so", "libhsa-runtime64.so")
CUDA_ERROR_NOT_INITIALIZED = 3


def warm_imports(engine: str, host: PluginHost | None = None) -> list[str]:
    """Import ``engine``'s plugin and the modules its ``WARM_IMPORTS`` lists; returns those modules.

    A module that fails to import is logged and skipped: the launch that takes
    this worker imports it again and reports the error as a cold start would.
    """
    host = host or PluginHost.discover(only=[engine])
    plugin = host.pm.get_plugin(engine)
    names = [str(n) for n in getattr(plugin, "WARM_IMPORTS", None) or []]
    done = []
    for name in names:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as exc:
            log.warning("warm import of %s for %s failed: %s: %s", name, engine, type(exc).__name__, exc)
    return done


def driver_loaded(maps: str | None = None, cuda_initialised: Callable[[], bool] | None = None) -> bool:
    """Whether a GPU driver in this process has read the visible devices already (Linux; False where the mapped
    libraries cannot be seen).  ``maps`` and ``cuda_initialised`` are for tests."""
    if maps is None:
        try:
            with open("/proc/self/maps") as f:
                maps = f.read()
        except OSError:
            return False
    if any(lib in maps for lib in DRIVERS[1:]):
        return True
    return DRIVERS[0] in maps and (cuda_initialised or _cuda_initialised)()


def _cuda_initialised() -> bool:
    """Whether ``cuInit`` ran in this process: every driver call before it answers CUDA_ERROR_NOT_INITIALIZED (3).
    Asks the libcuda already mapped (RTLD_NOLOAD loads nothing); counting devices initialises nothing."""
    try:
        lib = ctypes.CDLL("libcuda.so.1", mode=os.RTLD_NOLOAD)
        count = ctypes.c_int(0)
        return int(lib.cuDeviceGetCount(ctypes.byref(count))) != CUDA_ERROR_NOT_INITIALIZED
    except (OSError, AttributeError):
        return True  # cannot tell: assume the devices were read


def adopt(frame: p.Adopt) -> None:
    """Become the replica: its environment, its log file as stdout and stderr (Python's and C libraries')."""
    os.environ.clear()
    os.environ.update(frame.env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.makedirs(os.path.dirname(frame.log), exist_ok=True)
    fd = os.open(frame.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.getLogger().setLevel(frame.env.get("XINF_LOG_LEVEL", "INFO"))


async def wait(engine: str, path: str, host: PluginHost) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect, import (``host`` discovers the plugin), say ``Idle`` and wait to be taken; the connection once
    adopted (None: the server went)."""
    reader, writer = await asyncio.open_unix_connection(path)
    imported = warm_imports(engine, host)
    log.info("warm worker for %s idle (pid %d), imported: %s", engine, os.getpid(), ", ".join(imported) or "-")
    writer.write(p.encode(p.Idle(pid=os.getpid(), driver=driver_loaded())))
    try:
        frame = await p.read_frame(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not isinstance(frame, p.Adopt):
        print(f"expected an Adopt frame, got {type(frame).__name__}", file=sys.stderr)
        return None
    adopt(frame)
    return reader, writer
