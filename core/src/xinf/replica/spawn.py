"""Starting a replica process on this machine and waiting for it to connect.

Shared by a cold launch (``ProcessReplica``) and the warm pool
(``xinf.warmpool``), whose workers are the same ``python -m xinf.replica``
started ahead of time.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def start(
    python: str, args: list[str], *, env: dict[str, str], log_path: Path, socket_path: Path
) -> tuple[asyncio.subprocess.Process, Connection | None]:
    """Run ``python -m xinf.replica [args] SOCKET``; its process, and its connection (None: it exited first).

    Only the process we started may connect; the socket file is gone once it
    has (or has exited).  A start that is cancelled kills the process.
    """
    connected: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connected.done():
            writer.close()
        else:
            connected.set_result((reader, writer))

    _clear(socket_path)
    server = await asyncio.start_unix_server(on_connect, path=str(socket_path), limit=1 << 20)
    proc: asyncio.subprocess.Process | None = None
    try:
        os.chmod(socket_path, 0o600)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logfile:  # noqa: ASYNC230 (opening is instant)
            proc = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "xinf.replica",
                *args,
                str(socket_path),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        exited = asyncio.ensure_future(proc.wait())
        first: set[asyncio.Future[Any]] = {connected, exited}
        done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if connected not in done:
            return proc, None
        exited.cancel()
        return proc, connected.result()
    except BaseException:
        if proc is not None and proc.returncode is None:
            proc.kill()
        raise
    finally:
        server.close()
        _clear(socket_path)


def _clear(socket_path: Path) -> None:
    """No socket file left at ``socket_path`` (its folder exists): instant, so called from the event loop."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
