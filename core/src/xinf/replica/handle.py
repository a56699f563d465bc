"""The server's handle on one replica.

``generate`` and ``embed`` are the only things the rest of the server calls
per request; everything that crosses to the replica is a frame.
``ReplicaHandle`` holds all of that (handshake, health probe, requests,
cancellation, what a death means); a subclass only carries bytes:
``ProcessReplica`` to a process on this machine over a unix socket,
``xinf.cluster.ray.RayReplica`` to a Ray actor on another machine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from xinf import errors
from xinf.operations import Request, Result, operation
from xinf.replica import protocol as p
from xinf.replica import spawn
from xinf.types import Chunk, EmbedRequest, EmbedResult, GenerateRequest

if TYPE_CHECKING:
    from xinf.warmpool import WarmPool

log = logging.getLogger(__name__)

_DIED = object()  # queued to every request of a replica that went away
KEEPALIVE = Chunk(text="")  # the chunk of ``KEEPALIVE_BATCH``
# Yielded by ``generate`` after ``keepalive`` seconds without output; consumers must not change it.
KEEPALIVE_BATCH = [KEEPALIVE]
_KEEPALIVE_FRAME = p.Out(id=0, chunks=KEEPALIVE_BATCH)


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True):
    """How a replica is probed: XINFERENCE_HEALTH_CHECK_* (``enabled`` False skips probing)."""

    enabled: bool = True
    failure_threshold: int = 5
    interval: float = 5.0
    timeout: float = 10.0


class ReplicaDied(errors.Unavailable):
    """The replica process exited while a request was in flight (503)."""


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ReplicaHandle:
    """The server's side of one replica, whatever carries its frames.

    Subclasses provide the transport: ``_open`` starts the replica and returns
    the stream of frames it sends and a future that resolves when it is gone;
    ``_write`` sends it bytes; ``_close``, ``_kill`` and ``kill`` end it.
    Everything else (the launch handshake, health probes, multiplexing
    requests, cancellation, what a death means for requests in flight) is
    shared, so a replica in a Ray actor on another machine behaves exactly as
    a local process does.
    """

    def __init__(
        self,
        *,
        name: str,
        launch: p.Launch,
        on_exit: Callable[[ReplicaHandle, int], None] | None = None,
        health: HealthCheck | None = None,
    ):
        self.name = name
        self.launch = launch
        self.on_exit = on_exit
        self.health = health or HealthCheck(enabled=False)
        self.failed_pings = 0
        self.status = "starting"
        self.inflight = 0
        self.pid: int | None = None
        self.returncode: int | None = None
        self.info: dict[str, Any] = {}  # what the replica said in its Hello
        self.pending: dict[int, asyncio.Queue[Any]] = {}
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.tasks: list[asyncio.Task[Any]] = []
        self.stopping = False
        self.connected = False
        self.exited: asyncio.Future[int | None] | None = None
        self.last_progress = time.monotonic()  # the progress watchdog's clock (xinf.watchdog)
        self.ended_by: str | None = None  # why the server ended it, for the requests it ends
        self.deadline: float | None = None  # XINF_REQUEST_TIMEOUT: seconds a generation may take

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def index(self) -> int:
        """The replica's id within its model; stable across restarts."""
        return self.launch.placement.replica

    @property
    def node(self) -> str | None:
        """The cluster node it runs on (None: this machine, not in a cluster)."""
        return self.launch.placement.node

    @property
    def log(self) -> str | None:
        """Where its output goes, for people reading ``GET /v1/models/{uid}``."""
        return None

    # ------------------------------------------------------------ transport (subclasses)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.Future[int | None]]:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _opened(self) -> None:
        """``start`` is over, whether it worked or not: drop what only the start needed."""

    def _close(self) -> None:
        """The replica is stopped: release the transport."""

    async def _kill(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """End the replica at once (health monitor, tests, fault injection)."""
        raise NotImplementedError

    def _gone(self) -> str:
        """How the replica ended, in words ("replica process exited with code 9")."""
        return f"replica {_ending(self.returncode)}"

    def tail(self, lines: int = 30) -> str:
        """The last lines of its output, headed by where they come from ("" when not at hand)."""
        return ""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the replica, send it the model, wait until it is loaded (and answers pings)."""
        began = time.monotonic()
        try:
            reader, exited = await self._open()
            opened = time.monotonic()
            self.exited = exited
            self.connected = True
            self._write(p.encode(self.launch))
            hello = asyncio.ensure_future(p.read_frame(reader))
            first: set[asyncio.Future[Any]] = {hello, exited}
            done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if hello not in done:
                hello.cancel()
                self.returncode = exited.result()
                raise self._launch_error(f"{self._gone()} while loading")
            try:
                frame = hello.result()
            except (asyncio.IncompleteReadError, ConnectionError):
                self.returncode = await exited
                raise self._launch_error(f"{self._gone()} while loading") from None
            if isinstance(frame, p.Fail):
                raise self._launch_error(str(frame.error.get("message", "load failed")), tail=False)
            if not isinstance(frame, p.Hello):
                raise self._launch_error(f"unexpected first frame {type(frame).__name__}")
            self.pid = frame.pid
            self.info = frame.info
            self.tasks = [
                asyncio.ensure_future(self._read(reader)),
                asyncio.ensure_future(self._watch(exited)),
            ]
            loaded = time.monotonic()
            if self.health.enabled:
                await self._probe()
            log.debug(
                "%s ready in %.3fs: process %.3fs (%s), load %.3fs, health check %.3fs",
                self.name,
                time.monotonic() - began,
                opened - began,
                "warm" if self.info.get("warm") else "started",
                loaded - opened,
                time.monotonic() - loaded,
            )
        except BaseException:
            self.stopping = True  # a replica that never started is not restarted
            self.connected = False
            await self._kill()
            for task in self.tasks:
                task.cancel()
            raise
        finally:
            self._opened()
        self.status = "ready"

    async def _probe(self) -> None:
        """Ping until the replica answers; after ``failure_threshold`` misses it is a launch error."""
        check = self.health
        for attempt in range(1, check.failure_threshold + 1):
            try:
                await self.ping(check.timeout)
                return
            except (asyncio.TimeoutError, ReplicaDied) as exc:
                if isinstance(exc, ReplicaDied) and self.exited is not None:
                    try:  # the connection went away: the replica is ending
                        await asyncio.wait_for(asyncio.shield(self.exited), 5)
                    except asyncio.TimeoutError:
                        pass
                if self.exited is not None and self.exited.done():
                    self.returncode = self.exited.result()
                    raise self._launch_error(f"{self._gone()} during its health check") from None
                log.warning("%s did not answer health check %d/%d", self.name, attempt, check.failure_threshold)
            if attempt < check.failure_threshold:
                await asyncio.sleep(check.interval)
        raise self._launch_error(
            f"loaded but failed {check.failure_threshold} health check(s) "
            f"(no answer within {check.timeout:g}s, {check.interval:g}s apart); it was stopped"
        )

    def _launch_error(self, message: str, *, tail: bool = True) -> errors.LaunchError:
        text = f"{self.name}: {message}"
        if tail:
            last = self.tail()
            if last:
                text += f"\n{last}"
        return errors.LaunchError(text)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await p.read_frame(reader)
                rid = getattr(frame, "id", None)
                if rid is None:
                    continue
                queue = self.pending.get(rid)
                if queue is not None:
                    self.last_progress = time.monotonic()
                    queue.put_nowait(frame)
                    continue
                waiter = self.waiters.pop(rid, None)
                if waiter is not None and type(frame) is not p.Pong:
                    self.last_progress = time.monotonic()
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._lost()

    async def _watch(self, exited: asyncio.Future[int | None]) -> None:
        code = await exited
        self.returncode = code
        self._lost()
        if self.status == "starting":
            self.status = "dead"  # start() is waiting on it and reports the failure itself
        elif not self.stopping:
            where = f"; see {self.log}" if self.log else ""
            log.warning("%s: %s%s", self.name, self._gone(), where)
            self.status = "dead"
            if self.on_exit is not None:
                self.on_exit(self, code if code is not None else -1)
        else:
            self.status = "stopped"

    def _lost(self) -> None:
        """The connection is gone: every request in flight ends now."""
        self.connected = False
        if self.status == "ready":
            self.status = "dead" if not self.stopping else "stopped"
        for queue in self.pending.values():
            queue.put_nowait(_DIED)
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_result(_DIED)
        self.waiters.clear()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the replica to unload and exit; kill it if it does not within ``timeout``."""
        self.stopping = True
        if self.connected:
            try:
                self._write(p.encode(p.Shutdown()))
            except (ConnectionError, ReplicaDied):
                pass
        if self.exited is not None and not self.exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout)
            except asyncio.TimeoutError:
                pass
        await self._kill()
        self._close()
        for task in self.tasks:
            task.cancel()
        self.status = "stopped"

    # ------------------------------------------------------------ requests

    def _send(self, frame: p.Frame) -> None:
        if not self.connected or self.status != "ready":
            raise ReplicaDied(f"{self.name} is not running")
        self._write(p.encode(frame))

    def _send_control(self, frame: p.Frame) -> None:
        """Pings go out while the replica is still being probed, not only once it is ready."""
        if not self.connected or self.status not in ("starting", "ready"):
            raise ReplicaDied(f"{self.name} is not running")
        self._write(p.encode(frame))

    def generate(
        self, request: GenerateRequest, n: int = 1, keepalive: float | None = None
    ) -> AsyncIterator[list[Chunk]]:
        """Batches of chunks of ``request`` from this replica, as its frames bring them (a frame carries every
        chunk the engine had ready); closing the iterator cancels the request there.

        With ``keepalive``, ``KEEPALIVE_BATCH`` is yielded whenever that many
        seconds pass without output (streams turn it into an SSE comment).
        """
        frame = p.Generate(id=next(self.ids), request=request, n=n)
        return self._relay(frame, _chunks, "generating", keepalive)

    async def _relay(
        self, frame: p.Generate | p.Call, value: Callable[[Any], Any], doing: str, keepalive: float | None = None
    ) -> AsyncIterator[Any]:
        """Send a request whose answer streams, and yield ``value`` of each ``Out``/``Piece`` frame until ``Done``.

        ``Fail`` raises its error, the replica's end ``ReplicaDied``; closing the iterator early cancels the request
        on the replica.
        """
        rid = frame.id
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.pending[rid] = queue
        if self.inflight == 0:
            self.last_progress = time.monotonic()  # an idle replica has nothing to be late with
        self.inflight += 1
        finished = False
        timer = _KeepaliveTimer(queue, keepalive) if keepalive else None
        deadline = None
        if self.deadline:
            deadline = asyncio.get_running_loop().call_later(self.deadline, queue.put_nowait, _DEADLINE)
        try:
            self._send(frame)
            while True:
                item = await queue.get()
                kind = type(item)
                if kind is p.Out or kind is p.Piece:
                    if timer is not None:
                        timer.last = timer.loop.time()
                    yield value(item)
                elif kind is p.Done:
                    finished = True
                    return
                elif kind is p.Fail:
                    finished = True
                    raise errors.from_dict(item.status, item.error)
                elif item is _DEADLINE:
                    raise RequestTimeout(
                        f"the request took longer than this server's limit of {self.deadline:g}s (XINF_REQUEST_TIMEOUT)"
                    )
                else:
                    finished = True
                    raise ReplicaDied(await self._death_notice(doing))
        finally:
            if timer is not None:
                timer.cancel()
            if deadline is not None:
                deadline.cancel()
            self.pending.pop(rid, None)
            self.inflight -= 1
            if not finished and self.status == "ready":
                try:
                    self._send(p.Cancel(id=rid))
                except ReplicaDied:
                    pass

    async def _round_trip(self, frame: p.Embed | p.Call | p.Ping, timeout: float | None = None) -> Any:
        """Send a frame that has exactly one reply (an embedding, a hook's value, a pong) and wait for that reply."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiters[frame.id] = waiter
        request = type(frame) is not p.Ping  # pings do not make a replica look busy
        self.inflight += request
        try:
            if request:
                self._send(frame)
            else:
                self._send_control(frame)
            result = await asyncio.wait_for(waiter, timeout)
        finally:
            self.waiters.pop(frame.id, None)
            self.inflight -= request
        if result is _DIED:
            raise ReplicaDied(await self._death_notice("serving"))
        if isinstance(result, p.Fail):
            raise errors.from_dict(result.status, result.error)
        return result

    async def _death_notice(self, doing: str) -> str:
        """What a request that the replica's end cut short tells its client."""
        if self.ended_by:
            return f"{self.ended_by}; retry the request"
        if self.returncode is None and self.exited is not None:
            # The connection drops a moment before the exit status is known.
            try:
                self.returncode = await asyncio.wait_for(asyncio.shield(self.exited), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
        return f"{self.name} stopped while {doing} ({self._gone()}); retry the request"

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        frame = await self._round_trip(p.Embed(id=next(self.ids), request=request))
        return frame.result  # type: ignore[no-any-return]

    async def call(self, hook: str, **args: Any) -> Any:
        """The value of the engine's optional ``hook`` for this replica's model."""
        frame = await self._round_trip(p.Call(id=next(self.ids), hook=hook, args=args))
        return frame.value

    async def serve(self, request: Request) -> Result:
        """The result of a request of ``xinf.operations`` whose hook returns one value (rerank, transcribe...)."""
        op = operation(request)
        frame = await self._round_trip(p.Call(id=next(self.ids), hook=op.hook, args={"request": request}))
        return msgspec.convert(frame.value, op.result)

    def stream(self, request: Request) -> AsyncIterator[Result]:
        """The results of a request whose hook streams (speech); closing the iterator cancels it there."""
        op = operation(request)
        frame = p.Call(id=next(self.ids), hook=op.hook, args={"request": request})
        return self._relay(frame, lambda piece: msgspec.convert(piece.value, op.result), "serving")

    async def ping(self, timeout: float) -> None:
        await self._round_trip(p.Ping(id=next(self.ids)), timeout)


class ProcessReplica(ReplicaHandle):
    """One replica in its own OS process on this machine, reached over a unix socket."""

    def __init__(
        self,
        *,
        name: str,
        launch: p.Launch,
        env: dict[str, str],
        log_path: Path,
        socket_path: Path,
        python: str = sys.executable,
        on_exit: Callable[[ReplicaHandle, int], None] | None = None,
        health: HealthCheck | None = None,
        pool: WarmPool | None = None,
    ):
        super().__init__(name=name, launch=launch, on_exit=on_exit, health=health)
        self.env = env
        self.log_path = log_path
        self.socket_path = socket_path
        self.python = python
        self.pool = pool
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def log(self) -> str | None:
        return str(self.log_path)

    async def start(self) -> None:
        if self.pool is None:
            await super().start()
            return
        with self.pool.hold():  # the pool refills once no launch is loading
            await super().start()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.Future[int | None]]:
        """Take a pooled worker that fits (``xinf.warmpool``), else spawn the process; wait until it is connected."""
        pl = self.launch.placement
        worker = self.pool.take(self.python, self.launch.engine, self.env, pl.cores) if self.pool else None
        if worker is not None:
            assert worker.proc is not None and worker.connection is not None
            self.proc, (reader, self.writer) = worker.proc, worker.connection
            self._write(p.encode(p.Adopt(env=self.env, log=str(self.log_path))))
        else:
            self.proc, connection = await spawn.start(
                self.python, [], env=self.env, log_path=self.log_path, socket_path=self.socket_path
            )
            if connection is None:
                self.returncode = self.proc.returncode
                raise self._launch_error(f"{self._gone()} before connecting")
            reader, self.writer = connection
        self.pid = self.proc.pid
        return reader, asyncio.ensure_future(self.proc.wait())

    def _write(self, data: bytes) -> None:
        if self.writer is None or self.writer.is_closing():
            raise ReplicaDied(f"{self.name} is not running")
        self.writer.write(data)

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _gone(self) -> str:
        return f"replica process {_ending(self.returncode)}"

    def tail(self, lines: int = 30) -> str:
        last = log_tail(self.log_path, lines)
        return f"--- last lines of {self.log_path} ---\n{last}" if last else ""

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


class RequestTimeout(errors.XinfError):
    """A generation ran past XINF_REQUEST_TIMEOUT (504)."""

    status = 504
    type = "timeout_error"


_DEADLINE = object()  # queued when a request's XINF_REQUEST_TIMEOUT passes


def _chunks(frame: p.Out) -> list[Chunk]:
    return frame.chunks


def _ending(code: int | None) -> str:
    """How a process ended, in words: never "exit code None"."""
    if code is None:
        return "ended (its connection closed; exit status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class _KeepaliveTimer:
    """Puts a keep-alive frame on a request's queue after ``interval`` seconds without output (an SSE keep-alive;
    not the health probe, which is ``ping``).

    One timer per stream, re-armed from the time of the last output, so the
    per-chunk cost is one clock read.
    """

    __slots__ = ("handle", "interval", "last", "loop", "queue")

    def __init__(self, queue: asyncio.Queue[Any], interval: float):
        self.queue = queue
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        idle = self.loop.time() - self.last
        if idle >= self.interval * 0.999:
            self.queue.put_nowait(_KEEPALIVE_FRAME)
            self.last = self.loop.time()
            idle = 0.0
        self.handle = self.loop.call_later(self.interval - idle, self._tick)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
