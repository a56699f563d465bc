"""A pooled worker before it becomes a replica (``python -m xinf.replica --pool ENGINE SOCKET``).

It imports its engine plugin and what the plugin lists in ``WARM_IMPORTS``,
tells the server ``Idle`` and waits.  ``Adopt`` then gives it the replica's
environment and log file, and it goes on as a replica started cold would
(``xinf.replica.child.serve_stream``).  See ``xinf.warmpool`` for the rules.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys

from xinf.plugins import PluginHost
from xinf.replica import protocol as p

log = logging.getLogger("xinf.replica")
#: Libraries whose presence in the process means a GPU driver was loaded (and has read the visible devices).
DRIVERS = ("libcuda.so", "libamdhip64.so", "libhsa-runtime64.so")


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


def driver_loaded() -> bool:
    """Whether a GPU driver library is mapped into this process (Linux; False where that cannot be seen)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return False
    return any(lib in maps for lib in DRIVERS)


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
