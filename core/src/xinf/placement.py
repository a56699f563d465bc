"""Placing replicas on devices from the engines' memory estimates.

Free memory on a device is what NVML reports, less what earlier replicas have
reserved but may not have allocated yet (never below zero, never above
``total - reserved``).  ``IDLE_FIRST`` puts each replica where the most memory
is free; ``PACK`` fills devices in index order, keeping others whole for big
models.

In a cluster (``Hardware.nodes``) a device is ``(node, index)``: the devices
of one replica are always on one node, and devices are ordered node by node
(the server's own node first).  CPU replicas go to the node with the fewest
replicas (``IDLE_FIRST``) or the first node (``PACK``) whose memory fits
them.  ``worker_ip`` narrows all this to one node.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import msgspec

from xinf import cores, hostmemory
from xinf.cores import CoreBook
from xinf.errors import LaunchError
from xinf.types import Device, Hardware, MemoryEstimate, Node, Placement
from xinf.units import format_bytes

Estimator = Callable[[list[Device]], MemoryEstimate | None]
HOST = -1  # the "device" of a CPU replica's reservation: its node's memory


class Reservation(msgspec.Struct, kw_only=True):
    owner: str  # "<model uid>/<replica index>"
    device: int
    bytes: int
    node: str | None = None


class Ledger:
    """What each replica has reserved: memory on each device and host, cores (of each node, in a cluster)."""

    def __init__(self) -> None:
        self.items: list[Reservation] = []
        self.cores = CoreBook()

    def copy(self) -> Ledger:
        trial = Ledger()
        trial.items = list(self.items)
        trial.cores = self.cores.copy()
        return trial

    def reserved(self, device: int, node: str | None = None) -> int:
        return sum(r.bytes for r in self.items if r.device == device and r.node == node)

    def owners(self, device: int, node: str | None = None) -> list[str]:
        return [r.owner for r in self.items if r.device == device and r.node == node]

    def on_node(self, node: str) -> set[str]:
        """The replicas with anything reserved on ``node``."""
        return {r.owner for r in self.items if r.node == node}

    def add(self, owner: str, placement: Placement) -> None:
        node = placement.node
        for device, size in zip(placement.devices, placement.reserved or [0] * len(placement.devices)):
            self.items.append(Reservation(owner=owner, device=device, bytes=size, node=node))
        # Host memory; a CPU replica on a cluster node is recorded even without an estimate (replica counts).
        if placement.host or (not placement.devices and node is not None):
            self.items.append(Reservation(owner=owner, device=HOST, bytes=placement.host, node=node))
        self.cores.add(owner, node, placement.cores)

    def release(self, owner_prefix: str) -> None:
        """Drop reservations of one replica (``uid/0``) or a whole model (``uid/``)."""
        self.items = [r for r in self.items if not (r.owner == owner_prefix or r.owner.startswith(owner_prefix))]
        self.cores.release(owner_prefix)

    def free(self, device: Device) -> int:
        reserved = self.reserved(device.index, device.node)
        return max(0, min(device.free_memory, device.total_memory - reserved))

    def free_host(self, node: Node) -> int:
        return hostmemory.free(node.memory_total, node.memory_available, self.reserved(HOST, node.id))


def plan(
    *,
    uid: str,
    replicas: int,
    hardware: Hardware,
    ledger: Ledger,
    estimate: Estimator,
    n_gpu: int | None,
    gpu_idx: list[int] | None,
    strategy: str = "IDLE_FIRST",
    allow_multi_replica: bool = True,
    first_replica: int = 0,
    worker_ip: str | None = None,
    cores_per_replica: int | None = None,
) -> list[Placement]:
    """Placements for ``replicas`` new replicas; reserves them in a copy of ``ledger``.

    ``n_gpu`` None means "auto" (one device per replica when there are any),
    0 means CPU only.  Raises ``LaunchError`` with each device's free memory
    when a replica fits nowhere, and with the host's free memory when its
    host part does not fit.  ``cores_per_replica``: None divides each node's
    cores among the launch's replicas there, 0 places no cores.
    """
    placements = _place(
        uid,
        replicas,
        hardware,
        ledger,
        estimate,
        n_gpu,
        gpu_idx,
        strategy,
        allow_multi_replica,
        first_replica,
        worker_ip,
    )
    return _host_and_cores(uid, placements, hardware, ledger, strategy, cores_per_replica)


def _place(
    uid: str,
    replicas: int,
    hardware: Hardware,
    ledger: Ledger,
    estimate: Estimator,
    n_gpu: int | None,
    gpu_idx: list[int] | None,
    strategy: str,
    allow_multi_replica: bool,
    first_replica: int,
    worker_ip: str | None,
) -> list[Placement]:
    """Nodes and devices for each replica, by device memory."""
    nodes = _nodes(hardware, worker_ip)
    devices = _usable_devices(hardware, nodes, gpu_idx)
    if gpu_idx and n_gpu is None:
        n_gpu = len(gpu_idx) if len(gpu_idx) > 1 and replicas == 1 else 1
    if n_gpu == 0 or not devices:
        if n_gpu and not devices:
            where = "this machine has" if not nodes else f"{_names(nodes)} {'has' if len(nodes) == 1 else 'have'}"
            raise LaunchError(f"n_gpu={n_gpu} asked for, but {where} no GPU")
        if nodes:
            return _place_on_nodes(uid, replicas, first_replica, nodes, ledger, estimate, strategy)
        return [Placement(replica=first_replica + i, estimate=estimate([])) for i in range(replicas)]
    per_replica = n_gpu or 1
    most = max(sum(1 for d in devices if d.node == node) for node in {d.node for d in devices})
    if per_replica > most:
        raise LaunchError(
            f"n_gpu={per_replica} asked for, but only {most} device(s) can be used" + (" on one node" if nodes else "")
        )

    trial = ledger.copy()
    placements = []
    for i in range(replicas):
        index = first_replica + i
        placement = _place_one(uid, index, devices, per_replica, trial, estimate, strategy, allow_multi_replica)
        trial.add(f"{uid}/{index}", placement)
        placements.append(placement)
    return placements


def _usable_devices(hardware: Hardware, nodes: list[Node], gpu_idx: list[int] | None) -> list[Device]:
    """The devices a launch may use, by node then index: those of ``nodes`` (all on one machine), among ``gpu_idx``."""
    rank = {n.id: i for i, n in enumerate(hardware.nodes)}
    devices = sorted(hardware.devices, key=lambda d: (rank.get(d.node or "", 0), d.index))
    if nodes:
        allowed = {n.id for n in nodes}
        devices = [d for d in devices if d.node in allowed]
    if gpu_idx:
        known = {d.index for d in devices}
        missing = [i for i in gpu_idx if i not in known]
        if missing:
            raise LaunchError(f"gpu_idx {missing} not found; devices here: {sorted(known) or 'none (CPU only)'}")
        devices = [d for d in devices if d.index in gpu_idx]
    return devices


def _host_and_cores(
    uid: str,
    placements: list[Placement],
    hardware: Hardware,
    ledger: Ledger,
    strategy: str,
    per_replica: int | None,
) -> list[Placement]:
    """Reserve each replica's host memory (refusing what does not fit) and give it its cores."""
    nodes = {n.id: n for n in hardware.nodes}
    heavy: dict[str | None, int] = {}  # replicas per node that compute on the CPU
    for pl in placements:
        if _computes_on_cpu(pl):
            heavy[pl.node] = heavy.get(pl.node, 0) + 1
    trial = ledger.copy()
    for pl in placements:
        node = nodes.get(pl.node or "")
        if node is not None:
            total, available, where = node.memory_total, node.memory_available, f"on node {node.address}"
            available_cores = node.cores or list(range(node.cpu_count or 1))
        else:
            total, available, where = hardware.memory_total, hardware.memory_available, "on this machine"
            available_cores = hardware.cores or list(range(hardware.cpu_count or 1))
        pl.host = hostmemory.check(
            uid=uid,
            index=pl.replica,
            estimate=pl.estimate,
            total=total,
            available=available,
            reserved=trial.reserved(HOST, pl.node),
            where=where,
        )
        if per_replica != 0:
            count = cores.per_replica(per_replica, len(available_cores), heavy.get(pl.node, 0))
            if not _computes_on_cpu(pl):
                count = min(count, cores.GPU_REPLICA_CORES)
            pl.cores = trial.cores.choose(pl.node, available_cores, count, strategy)
        trial.add(f"{uid}/{pl.replica}", pl)
    return placements


def _computes_on_cpu(pl: Placement) -> bool:
    """A CPU replica, or a GPU replica with layers left on the host (partial offload)."""
    if not pl.devices:
        return True
    est = pl.estimate
    return (
        est is not None
        and est.gpu_layers is not None
        and est.total_layers is not None
        and (est.gpu_layers < est.total_layers)
    )


def _nodes(hardware: Hardware, worker_ip: str | None) -> list[Node]:
    """The nodes a launch may use: all of a cluster's, those ``worker_ip`` names, none on one machine."""
    if not worker_ip:
        return list(hardware.nodes)
    if not hardware.nodes:
        raise LaunchError(
            f"worker_ip {worker_ip!r} picks a machine of a cluster, but this server runs on one machine "
            "(start it with --cluster ray to serve across machines)"
        )
    chosen = [n for n in hardware.nodes if worker_ip in (n.address, n.id, n.hostname)]
    if not chosen:
        listed = ", ".join(f"{n.address} ({n.hostname or n.id[:12]})" for n in hardware.nodes)
        raise LaunchError(f"worker_ip {worker_ip!r} is not a node of the cluster; its nodes: {listed}")
    return chosen


def _names(nodes: list[Node]) -> str:
    return ", ".join(f"node {n.address}" for n in nodes)


def _place_on_nodes(
    uid: str,
    replicas: int,
    first: int,
    nodes: list[Node],
    ledger: Ledger,
    estimate: Estimator,
    strategy: str,
) -> list[Placement]:
    """CPU replicas of a cluster: each on the least busy node (PACK: the first) with memory for it."""
    trial = ledger.copy()
    placements = []
    for i in range(replicas):
        index = first + i
        est = estimate([])
        need = est.host if est is not None and est.host else 0
        fitting = [n for n in nodes if need <= trial.free_host(n)]
        if not fitting:
            lines = [f"replica {index} of {uid} does not fit in the memory of any node:"]
            lines += [
                f"  {n.address} ({n.hostname}): {format_bytes(trial.free_host(n))} free, needs {format_bytes(need)}"
                for n in nodes
            ]
            raise LaunchError("\n".join(lines))
        if strategy == "PACK":
            node = fitting[0]
        else:
            node = min(fitting, key=lambda n: len(trial.on_node(n.id)))  # ties: the earlier node
        placement = Placement(replica=index, node=node.id, host=need, estimate=est)
        trial.add(f"{uid}/{index}", placement)
        placements.append(placement)
    return placements


def _place_one(
    uid: str,
    index: int,
    devices: list[Device],
    per_replica: int,
    ledger: Ledger,
    estimate: Estimator,
    strategy: str,
    allow_multi_replica: bool,
) -> Placement:
    usable = [d for d in devices if allow_multi_replica or not ledger.owners(d.index, d.node)]
    if len(usable) < per_replica:
        raise LaunchError(
            f"replica {index} of {uid} needs {per_replica} device(s) to itself, but only {len(usable)} "
            "are unoccupied (XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU=0)"
        )
    position = {(d.node, d.index): i for i, d in enumerate(devices)}
    options = []
    for group in combinations(usable, per_replica):
        if len({d.node for d in group}) > 1:
            continue  # one replica's devices are on one machine
        view = [msgspec.structs.replace(d, free_memory=ledger.free(d)) for d in group]
        est = estimate(view)
        need = est.per_device if est is not None and est.per_device else [0] * per_replica
        fits = all(n <= d.free_memory for n, d in zip(need, view))
        options.append((group, view, est, need, fits))

    fitting = [o for o in options if o[4]]
    if not fitting:
        offload = [o for o in options if o[2] is not None and o[2].gpu_layers is not None]
        if not offload:
            raise LaunchError(_no_fit_message(uid, index, options))
        fitting = offload  # the engine offloads only what fits; place it where most is free

    def most_free(o: tuple) -> tuple:  # type: ignore[type-arg]
        view, need = o[1], o[3]
        order = [-position[d.node, d.index] for d in view]
        if o[2] is None:  # no estimate: spread by replica count
            return (-sum(len(ledger.owners(d.index, d.node)) for d in view), *order)
        return (min(d.free_memory - n for d, n in zip(view, need)), *order)

    if strategy == "PACK":
        chosen = fitting[0]
    else:
        chosen = max(fitting, key=most_free)
    group, _view, est, need, _fits = chosen
    return Placement(
        replica=index,
        node=group[0].node,
        devices=[d.index for d in group],
        reserved=list(need),
        gpu_layers=est.gpu_layers if est is not None else None,
        estimate=est,
    )


def _no_fit_message(uid: str, index: int, options: list[tuple]) -> str:  # type: ignore[type-arg]
    lines = [f"replica {index} of {uid} does not fit on any device:"]
    for _group, view, est, need, _fits in options:
        for d, n in zip(view, need):
            where = f"node {d.node[:12]} " if d.node else ""
            lines.append(
                f"  {where}GPU {d.index} ({d.name}): {format_bytes(d.free_memory)} free, needs {format_bytes(n)}"
            )
        if est is not None and est.note:
            lines.append(f"    {est.note}")
    return "\n".join(lines)
