"""A Ray cluster as xinf's machines: each node's devices, and replicas in Ray actors.

The server is a Ray driver.  Each node other than the server's own runs a
small ``NodeAgent`` actor that reports the node's devices (NVML there, or that
node's ``XINF_SIMULATED_GPUS``) and memory.  A replica placed on such a node is
a ``ReplicaActor``: the replica process's own loop (``serve_stream`` in
``xinf.replica.child``: plugin loading, reasoning split, n > 1, cancellation)
running in a Ray actor, fed the same msgpack frames a local replica reads
from its socket.  The frames travel as bytes through two actor methods:
``push`` (server to replica, numbered because an async actor may start calls
out of order) and ``pull`` (replica to server, one call outstanding, each
taking everything queued since the last one).  ``RayReplica`` is the server's
handle on it: the same ``ReplicaHandle`` as a local process, over that pipe.
Replicas placed on the server's own node stay local processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from xinf import devices
from xinf.replica import protocol as p
from xinf.replica.handle import HealthCheck, ReplicaDied, ReplicaHandle, _ending
from xinf.types import Device, Hardware, Node

log = logging.getLogger(__name__)

AGENT_TIMEOUT = 5.0  # seconds a node's agent has to answer before the node counts as gone
START_TIMEOUT = 120.0  # seconds for a replica's actor to come up on its node (before the model loads)
PULL_LIMIT = 1 << 20  # bytes the replica may queue before its engine waits for the server to catch up


class RayCluster:
    """The server's connection to a Ray cluster (``xinf serve --cluster ray``)."""

    def __init__(self, address: str):
        self.address = address
        self.local_node: str | None = None
        self.agents: dict[str, Any] = {}
        self.addresses: dict[str, str] = {}  # node id -> IP, as of the last inventory
        self.lock = threading.Lock()  # inventories run in worker threads, maybe two at once

    @classmethod
    def connect(cls, address: str) -> RayCluster:
        target = _ray_address(address)
        for attempt in range(3):
            try:
                # Replica and agent output stays in each node's logs, not the server's terminal.
                ray.init(address=target, namespace="xinf", log_to_driver=False, logging_level=logging.WARNING)
                break
            except ConnectionError:
                # A Ray Client server starts a session server per client, which can miss its own start-up
                # deadline on a busy head node; a second try usually finds it up.
                if attempt == 2 or not (target or "").startswith("ray://"):
                    raise
                time.sleep(2)
        cluster = cls(address)
        if not (target or "").startswith("ray://"):  # through Ray Client the server is no node of its own
            cluster.local_node = ray.get_runtime_context().get_node_id()
        cluster.inventory()  # starts the agents now rather than on the first launch
        return cluster

    def close(self) -> None:
        for agent in self.agents.values():
            try:
                ray.kill(agent)
            except Exception:
                pass
        self.agents.clear()
        ray.shutdown()

    # ------------------------------------------------------------ inventory

    def inventory(self) -> Hardware:
        with self.lock:
            return self._inventory()

    def _inventory(self) -> Hardware:
        local = devices.inventory()
        live = _live_nodes()
        asked = {}
        for info in live:
            node = info["NodeID"]
            if node == self.local_node:
                continue
            agent: Any = self.agents.get(node)  # an ActorHandle; Ray types its methods only through ray.method
            if agent is None:
                agent = self.agents[node] = RemoteNodeAgent.options(
                    num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                    max_restarts=0,
                ).remote()
            asked[node] = agent.inventory.remote()
        answers: dict[str, tuple[Hardware, str]] = {}
        if asked:
            ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=AGENT_TIMEOUT)
            done = set(ready)
            for node, ref in asked.items():
                if ref not in done:
                    log.warning("node %s did not report within %gs; placing nothing there", node[:12], AGENT_TIMEOUT)
                    continue
                try:
                    answers[node] = msgspec.msgpack.decode(ray.get(ref), type=tuple[Hardware, str])
                except ray.exceptions.RayError as exc:
                    log.warning("node %s cannot report: %s", node[:12], _reason(exc))
                    self.agents.pop(node, None)  # a fresh agent next time, if the node lives
        for node in set(self.agents) - {info["NodeID"] for info in live}:
            self.agents.pop(node, None)

        nodes: list[Node] = []
        found: list[Device] = []
        for info in live:
            node = info["NodeID"]
            if node == self.local_node:
                hw, hostname = local, socket.gethostname()
            elif node in answers:
                hw, hostname = answers[node]
            else:
                continue
            nodes.append(
                Node(
                    id=node,
                    address=info["NodeManagerAddress"],
                    hostname=hostname,
                    cpu_count=hw.cpu_count,
                    memory_total=hw.memory_total,
                    memory_available=hw.memory_available,
                    local=node == self.local_node,
                    cores=hw.cores,
                )
            )
            found += [msgspec.structs.replace(d, node=node) for d in hw.devices]
        nodes.sort(key=lambda n: (not n.local, n.address, n.id))  # the server's own node first
        self.addresses.update({n.id: n.address for n in nodes})
        return msgspec.structs.replace(local, devices=found, nodes=nodes)

    # ------------------------------------------------------------ replicas

    def replica(
        self,
        *,
        name: str,
        launch: p.Launch,
        env: dict[str, str],
        log_name: str,
        on_exit: Callable[[ReplicaHandle, int], None] | None,
        health: HealthCheck | None,
    ) -> RayReplica:
        node = launch.placement.node
        assert node is not None
        address = self.addresses.get(node, node[:12])
        return RayReplica(
            name=name, launch=launch, env=env, node_address=address, log_name=log_name, on_exit=on_exit, health=health
        )


def _ray_address(address: str) -> str | None:
    """``ray`` -> what ``ray start`` left on this machine or $RAY_ADDRESS; else the address itself."""
    address = address.strip()
    if address in ("ray", "auto", ""):
        return os.environ.get("RAY_ADDRESS") or "auto"
    return address


def _live_nodes() -> list[dict[str, Any]]:
    nodes: Callable[[], list[dict[str, Any]]] = ray.nodes  # untyped in Ray
    return [n for n in nodes() if n.get("Alive")]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------- on the nodes


class NodeAgent:
    """Reports one node's devices and memory to the server."""

    def inventory(self) -> bytes:
        return msgspec.msgpack.encode((devices.inventory(), socket.gethostname()))


# ray.remote called, not used as a class decorator: type checkers then know the actor class's ``options``.
RemoteNodeAgent = ray.remote(NodeAgent)


class Outbox:
    """The replica's outgoing frames, queued until the server pulls them (``child.Outlet``)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.taken = asyncio.Event()
        self.code: int | None = None  # set when the replica's loop has ended

    def send(self, frame: p.Frame) -> None:
        self.buffer += p.encode(frame)
        self.arrived.set()

    def send_all(self, frames: list[p.Frame]) -> None:
        for frame in frames:
            self.buffer += p.encode(frame)
        self.arrived.set()

    def backlog(self) -> int:
        return len(self.buffer)

    async def drain(self) -> None:
        while len(self.buffer) > PULL_LIMIT and self.code is None:
            self.taken.clear()
            await self.taken.wait()

    def close(self, code: int) -> None:
        self.code = code
        self.arrived.set()
        self.taken.set()

    async def take(self) -> bytes | int:
        while not self.buffer:
            if self.code is not None:
                return self.code
            self.arrived.clear()
            await self.arrived.wait()
        data = bytes(self.buffer)
        self.buffer.clear()
        self.taken.set()
        return data


class ReplicaActor:
    """A replica on a cluster node: ``serve_stream`` fed by ``push`` and read by ``pull``."""

    def __init__(self, env: dict[str, str], log_name: str):
        os.environ.update(env)
        if "OMP_NUM_THREADS" not in env and os.environ.get("OMP_NUM_THREADS") == "1":
            # Ray pins every actor to one OpenMP thread; a local replica is not pinned, so neither is this one.
            del os.environ["OMP_NUM_THREADS"]
        home = Path(os.environ.get("XINFERENCE_HOME") or Path.home() / ".xinference").expanduser()
        self.log_path = home / "logs" / "models" / log_name
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Everything the engine prints (C++ libraries included) goes to the replica's log on its node.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        logging.basicConfig(
            level=os.environ.get("XINF_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s", force=True
        )
        self.inbox: asyncio.StreamReader | None = None
        self.outbox: Outbox | None = None
        self.task: asyncio.Task[None] | None = None
        self.next = 0
        self.early: dict[int, bytes] = {}

    async def hello(self) -> dict[str, Any]:
        """Start serving (the first frame pushed must be ``Launch``); where this replica is."""
        from xinf.replica.child import serve_stream

        if self.task is None:
            self.inbox = asyncio.StreamReader(limit=1 << 20)
            self.outbox = Outbox()
            outbox = self.outbox

            async def run() -> None:
                assert self.inbox is not None
                code = 1
                try:
                    code = await serve_stream(self.inbox, outbox)
                except Exception:
                    logging.getLogger("xinf.replica").exception("replica loop failed")
                finally:
                    outbox.close(code)

            self.task = asyncio.get_running_loop().create_task(run())
        return {"pid": os.getpid(), "log": str(self.log_path), "hostname": socket.gethostname()}

    async def push(self, seq: int, data: bytes) -> None:
        assert self.inbox is not None
        self.early[seq] = data
        while self.next in self.early:
            self.inbox.feed_data(self.early.pop(self.next))
            self.next += 1

    async def pull(self) -> bytes | int:
        """Frames queued since the last pull, waiting for some; the loop's exit code once it has ended."""
        assert self.outbox is not None
        return await self.outbox.take()


RemoteReplicaActor = ray.remote(ReplicaActor)


# ---------------------------------------------------------------- the server's handle


class RayReplica(ReplicaHandle):
    """A replica in a ``ReplicaActor`` on another node of the cluster."""

    def __init__(
        self,
        *,
        name: str,
        launch: p.Launch,
        env: dict[str, str],
        node_address: str,
        log_name: str,
        on_exit: Callable[[ReplicaHandle, int], None] | None = None,
        health: HealthCheck | None = None,
    ):
        super().__init__(name=name, launch=launch, on_exit=on_exit, health=health)
        self.env = env
        self.node_address = node_address
        self.log_name = log_name
        self.log_path: str | None = None
        self.actor: Any = None
        self.seq = 0
        self.reason = ""

    @property
    def log(self) -> str | None:
        return f"{self.node_address}:{self.log_path}" if self.log_path else None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.Future[int | None]]:
        node = self.launch.placement.node
        assert node is not None, "a RayReplica is placed on a cluster node"
        self.actor = RemoteReplicaActor.options(
            num_cpus=0,  # xinf places replicas itself, by memory
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            runtime_env={"env_vars": self.env},
            max_restarts=0,
            name=None,
        ).remote(self.env, self.log_name)
        try:
            info = await asyncio.wait_for(asyncio.ensure_future(self.actor.hello.remote()), START_TIMEOUT)
        except ray.exceptions.RayError as exc:
            self.reason = _reason(exc)
            raise self._launch_error(f"could not start on node {self.node_address}: {self.reason}") from None
        except asyncio.TimeoutError:
            raise self._launch_error(
                f"its Ray actor did not start on node {self.node_address} within {START_TIMEOUT:g}s"
            ) from None
        self.pid = info["pid"]
        self.log_path = info["log"]
        reader = asyncio.StreamReader(limit=1 << 20)
        return reader, asyncio.ensure_future(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> int | None:
        """Pull the replica's frames into ``reader`` until it ends or its actor is lost."""
        try:
            while True:
                data = await self.actor.pull.remote()
                if isinstance(data, int):
                    return data
                reader.feed_data(data)
        except ray.exceptions.RayError as exc:
            self.reason = _reason(exc)
            self.kill()  # "unavailable" may be a network blip: make sure it does not live on unseen
            return None
        finally:
            reader.feed_eof()

    def _write(self, data: bytes) -> None:
        if self.actor is None:
            raise ReplicaDied(f"{self.name} is not running")
        self.actor.push.remote(self.seq, data)  # a lost actor shows in _pump, not here
        self.seq += 1

    def _gone(self) -> str:
        if self.returncode is not None:
            return f"replica on node {self.node_address} {_ending(self.returncode)}"
        return f"replica on node {self.node_address} was lost: {self.reason or 'its actor ended'}"

    def tail(self, lines: int = 30) -> str:
        return f"(its log is {self.log_path} on node {self.node_address})" if self.log_path else ""

    async def _kill(self) -> None:
        if self.actor is None:
            return
        try:
            ray.kill(self.actor, no_restart=True)
        except (ValueError, ray.exceptions.RayError):
            pass
        if self.exited is not None and not self.exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), 10)
            except asyncio.TimeoutError:
                pass

    def kill(self) -> None:
        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except (ValueError, ray.exceptions.RayError):
                pass
