"""The replica process: loads one model with its engine plugin and serves frames.

Started by the server as ``python -m xinf.replica SOCKET``, or ahead of a
launch as ``python -m xinf.replica --pool ENGINE SOCKET`` (``xinf.warmpool``).  It connects to
the server's socket, receives ``Launch``, loads the model, answers ``Hello``
and then serves ``Generate``/``Embed``/``Cancel``/``Ping`` until the server
says ``Shutdown`` or goes away (then it exits too).

``serve_stream`` is that loop without the socket: a Ray actor on another
machine runs the same loop over its own byte pipe (``xinf.cluster.ray``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec

from xinf import cores
from xinf.errors import InvalidRequest, LaunchError, XinfError
from xinf.operations import BY_HOOK
from xinf.plugins import PluginHost
from xinf.reasoning import ReasoningSplitter
from xinf.replica import protocol as p
from xinf.toolcalls.stream import ToolCallStream
from xinf.types import Chunk, GenerateRequest, ModelSpec

log = logging.getLogger("xinf.replica")
CALLABLE_HOOKS = ("convert_ids_to_tokens", "update_adapters")  # optional per-model hooks the server may call by name
BATCH_LIMIT = 256  # chunks of one request in one Out frame: an engine that writes faster still gets frames out


class Outlet(Protocol):
    """Where a replica's frames go: the server's socket, or a Ray actor's outbox."""

    def send(self, frame: p.Frame) -> None: ...

    def send_all(self, frames: list[p.Frame]) -> None:
        """Several frames at once, in order (one write where the transport allows)."""
        ...

    def backlog(self) -> int:
        """Bytes sent but not yet taken by the server."""
        ...

    async def drain(self) -> None: ...


class SocketOutlet:
    """Frames written to the server's unix socket."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer

    def send(self, frame: p.Frame) -> None:
        if not self.writer.is_closing():
            self.writer.write(p.encode(frame))

    def send_all(self, frames: list[p.Frame]) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join([p.encode(frame) for frame in frames]))

    def backlog(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()


class Replica:
    """One loaded model serving requests; frames in through its methods, frames out through ``outlet``."""

    def __init__(self, outlet: Outlet, host: PluginHost | None = None):
        self.outlet = outlet
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.model: Any = None
        self.spec: ModelSpec | None = None
        self.enable_thinking: bool | None = None
        self.generate_fn: Callable[..., Any] | None = None
        self.embed_fn: Callable[..., Any] | None = None
        self.unload_fn: Callable[..., Any] | None = None
        self.host = host  # discovered already (a warm worker's), else at load
        self.engine = ""
        self.info: dict[str, Any] = {}
        # Chunks not yet sent, by request: what the engines produce in one turn of the event loop leaves in one
        # frame per request (the server then relays it as one write), instead of a frame per token.
        self.ready: dict[int, list[Chunk]] = {}
        self.flushing: asyncio.Handle | None = None
        self.batching = os.environ.get("XINF_RELAY_BATCH", "1") != "0"

    def send(self, frame: p.Frame) -> None:
        if self.ready:
            self.flush()  # a request's chunks go out before its Done or Fail
        self.outlet.send(frame)

    def out(self, rid: int, chunk: Chunk) -> None:
        """Queue a chunk of request ``rid``; the queue goes out once the engines have nothing more ready."""
        if not self.batching:
            self.outlet.send(p.Out(id=rid, chunks=[chunk]))
            return
        chunks = self.ready.get(rid)
        if chunks is None:
            self.ready[rid] = [chunk]
            if self.flushing is None:
                self.flushing = asyncio.get_running_loop().call_soon(self.flush)
        else:
            chunks.append(chunk)
            if len(chunks) >= BATCH_LIMIT:
                self.flush()

    def flush(self) -> None:
        """Send every queued chunk: one ``Out`` frame per request."""
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing = None
        ready, self.ready = self.ready, {}
        self.outlet.send_all([p.Out(id=rid, chunks=chunks) for rid, chunks in ready.items()])

    async def load(self, launch: p.Launch) -> None:
        host = self.host if self.host and launch.engine in self.host.engines else None
        host = host or PluginHost.discover(only=[launch.engine])
        info = host.engines.get(launch.engine)
        if info is None:
            raise LaunchError(f"engine {launch.engine!r} is not installed in {sys.executable}")
        if not info.ok:
            raise LaunchError(f"engine {launch.engine!r} failed to load: {info.error}")
        self.spec = launch.spec
        self.host, self.engine = host, launch.engine
        self.enable_thinking = launch.enable_thinking
        # Pinned before the engine starts its thread pools, which size themselves to what they may use.
        cpus = cores.pin(launch.placement.cores)
        result = host.hook(launch.engine, "load")(spec=launch.spec, options=launch.options, placement=launch.placement)
        self.model = await result if inspect.isawaitable(result) else result
        if host.has_hook(launch.engine, "generate"):
            self.generate_fn = host.hook(launch.engine, "generate")
        if host.has_hook(launch.engine, "embed"):
            self.embed_fn = host.hook(launch.engine, "embed")
        if host.has_hook(launch.engine, "unload"):
            self.unload_fn = host.hook(launch.engine, "unload")
        # What the server shows per replica: the real CPUs pinned and the threads the engine runs.
        self.info = {"cpus": cpus, "threads": getattr(self.model, "threads", None)}
        # The context one request may use (llama.cpp: a slot's share of n_ctx), shown by GET /v1/models.
        context = getattr(self.model, "context_length", None)
        if isinstance(context, int) and context > 0:
            self.info["context_length"] = context

    # ------------------------------------------------------------ requests

    def submit(self, frame: p.Generate | p.Embed | p.Call) -> None:
        """Serve one request in its own task (``cancel`` ends it); the replica process is already running."""
        if isinstance(frame, p.Generate):
            coro = self.generate(frame)
        elif isinstance(frame, p.Embed):
            coro = self.embed(frame)
        else:
            coro = self.call(frame)
        task = asyncio.get_running_loop().create_task(self.guard(frame.id, coro))
        rid = frame.id
        self.tasks[rid] = task
        task.add_done_callback(lambda _task: self.tasks.pop(rid, None))

    def cancel(self, rid: int) -> None:
        task = self.tasks.get(rid)
        if task is not None:
            task.cancel()

    async def guard(self, rid: int, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except XinfError as exc:
            self.send(p.Fail(id=rid, status=exc.status, error=exc.to_dict()))
        except Exception as exc:
            traceback.print_exc()
            message = f"engine error: {type(exc).__name__}: {exc}"
            self.send(p.Fail(id=rid, status=500, error={"message": message, "type": "server_error"}))

    async def generate(self, frame: p.Generate) -> None:
        if self.generate_fn is None:
            raise XinfError(f"model {self.spec.name if self.spec else ''} cannot generate text")
        if frame.n == 1:
            await self.stream(frame.id, frame.request, 0)
        else:
            requests = []
            for i in range(frame.n):
                seed = None if frame.request.seed is None else frame.request.seed + i
                requests.append(_replace(frame.request, seed=seed))
            await asyncio.gather(*(self.stream(frame.id, r, i) for i, r in enumerate(requests)))
        self.send(p.Done(id=frame.id))

    async def stream(self, rid: int, request: GenerateRequest, index: int) -> None:
        assert self.generate_fn is not None
        tools = ToolCallStream.for_request(self.spec, request, getattr(self.model, "constrains_tool_calls", False))
        if tools is not None and tools.forced and self.spec is not None and self.spec.is_reasoning:
            # The grammar allows only the call: a reasoning model is asked not to think first.
            request = _replace(request, chat_template_kwargs={**request.chat_template_kwargs, "enable_thinking": False})
        splitter = self.splitter(request)
        chunks: AsyncIterator[Chunk] = self.generate_fn(model=self.model, request=request)
        try:
            async for chunk in chunks:
                if splitter is not None:
                    text = chunk.text
                    chunk.reasoning, chunk.text = splitter.feed(text)
                    if chunk.finish_reason is not None:
                        more_reasoning, more_text = splitter.flush()
                        chunk.reasoning += more_reasoning
                        chunk.text += more_text
                if tools is not None:
                    tools.apply(chunk)
                chunk.index = index
                self.out(rid, chunk)
                if self.outlet.backlog() > 1 << 20:
                    await self.outlet.drain()  # the server reads slower than we write
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    def splitter(self, request: GenerateRequest) -> ReasoningSplitter | None:
        spec = self.spec
        if spec is None or not spec.reasoning_end_tag or not request.is_chat:
            return None
        thinking = request.enable_thinking
        if thinking is None:
            thinking = True if self.enable_thinking is None else self.enable_thinking
        return ReasoningSplitter(spec.reasoning_start_tag or "", spec.reasoning_end_tag, thinking=thinking)

    async def embed(self, frame: p.Embed) -> None:
        if self.embed_fn is None:
            raise XinfError(f"model {self.spec.name if self.spec else ''} cannot embed")
        result = self.embed_fn(model=self.model, request=frame.request)
        if inspect.isawaitable(result):
            result = await result
        self.send(p.Embedded(id=frame.id, result=result))

    async def call(self, frame: p.Call) -> None:
        if frame.hook in BY_HOOK:
            await self.operation(frame)
            return
        if frame.hook not in CALLABLE_HOOKS:
            raise XinfError(f"{frame.hook!r} cannot be called on a replica")
        if self.host is None or not self.host.has_hook(self.engine, frame.hook):
            raise InvalidRequest(f"engine {self.engine} does not implement {frame.hook}", param="model")
        result = self.host.hook(self.engine, frame.hook)(model=self.model, **frame.args)
        if inspect.isawaitable(result):
            result = await result
        self.send(p.Returned(id=frame.id, value=result))

    async def operation(self, frame: p.Call) -> None:
        """A request of another model type (``xinf.operations``): its hook, one value back or a stream of pieces."""
        op = BY_HOOK[frame.hook]
        if self.host is None or not self.host.has_hook(self.engine, op.hook):
            name = self.spec.name if self.spec else ""
            raise InvalidRequest(
                f"model {name!r} cannot serve {op.hook} requests (engine {self.engine} has no such hook)"
            )
        request: Any = msgspec.convert(frame.args.get("request"), op.request)
        result = self.host.hook(self.engine, op.hook)(model=self.model, request=request)
        if not op.streams:
            if inspect.isawaitable(result):
                result = await result
            self.send(p.Returned(id=frame.id, value=result))
            return
        try:
            async for piece in result:
                self.send(p.Piece(id=frame.id, value=piece))
                if self.outlet.backlog() > 1 << 20:
                    await self.outlet.drain()
        finally:
            await result.aclose()
        self.send(p.Done(id=frame.id))

    async def shutdown(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        if self.unload_fn is not None:
            try:
                result = self.unload_fn(model=self.model)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                traceback.print_exc()


def _replace(request: GenerateRequest, **changes: Any) -> GenerateRequest:
    import msgspec

    return msgspec.structs.replace(request, **changes)


async def serve(path: str, pool_engine: str | None = None) -> int:
    """Serve the server's socket at ``path``; with ``pool_engine``, first wait in the warm pool (``xinf.warmpool``)."""
    host = None
    if pool_engine is not None:
        from xinf.replica import warm

        host = PluginHost.discover(only=[pool_engine])
        connection = await warm.wait(pool_engine, path, host)
        if connection is None:
            return 0  # the server stopped its pool
        reader, writer = connection
    else:
        reader, writer = await asyncio.open_unix_connection(path)
    try:
        return await serve_stream(reader, SocketOutlet(writer), host=host)
    finally:
        writer.close()


async def serve_stream(reader: asyncio.StreamReader, outlet: Outlet, host: PluginHost | None = None) -> int:
    """Load the model ``Launch`` names and serve frames until ``Shutdown`` or the end of ``reader``.

    ``host``: the plugins this process discovered ahead of the launch (a warm-pool worker; its ``Hello`` says so).
    """
    replica = Replica(outlet, host)
    launch = await p.read_frame(reader)
    if not isinstance(launch, p.Launch):
        print(f"expected a Launch frame, got {type(launch).__name__}", file=sys.stderr)
        return 2
    began = time.monotonic()
    try:
        await replica.load(launch)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        traceback.print_exc()
        error = exc.to_dict() if isinstance(exc, XinfError) else {"message": f"{type(exc).__name__}: {exc}"}
        replica.send(p.Fail(id=0, status=getattr(exc, "status", 400), error=error))
        await outlet.drain()
        return 1
    replica.send(p.Hello(pid=os.getpid(), info={**replica.info, "warm": host is not None}))
    took = time.monotonic() - began
    print(
        f"replica ready: {launch.spec.name} on engine {launch.engine} (pid {os.getpid()}), loaded in {took:.3f}s",
        flush=True,
    )
    while True:
        try:
            frame = await p.read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            break  # the server went away: nobody is left to serve
        if isinstance(frame, (p.Generate, p.Embed, p.Call)):
            replica.submit(frame)
        elif isinstance(frame, p.Cancel):
            replica.cancel(frame.id)
        elif isinstance(frame, p.Ping):
            replica.send(p.Pong(id=frame.id))
        elif isinstance(frame, p.Shutdown):
            break
    await replica.shutdown()
    return 0


def _die_with_parent() -> None:
    """Ask Linux to kill this process if the server dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pool_engine = None
    if len(argv) == 3 and argv[0] == "--pool":
        pool_engine, argv = argv[1], argv[2:]
    if len(argv) != 1:
        print("usage: python -m xinf.replica [--pool ENGINE] SOCKET", file=sys.stderr)
        return 2
    _die_with_parent()
    logging.basicConfig(level=os.environ.get("XINF_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(argv[0], pool_engine))
    return uvloop.run(serve(argv[0], pool_engine))
