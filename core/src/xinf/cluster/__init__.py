"""Serving across machines.

A ``Cluster`` gives the server every machine's devices (``inventory``) and
starts replicas on machines other than its own (``replica``).  The only
implementation is Ray (``xinf.cluster.ray``), imported by ``connect`` alone:
a server started without ``--cluster`` never imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xinf.replica import protocol as p
    from xinf.replica.handle import HealthCheck, ReplicaHandle
    from xinf.types import Hardware


class Cluster(Protocol):
    """The machines a server places replicas on, and how it reaches the other ones."""

    address: str
    local_node: str | None  # the node the server runs on; its replicas stay local processes

    def inventory(self) -> Hardware:
        """Every live node and its devices (nodes that do not answer are left out)."""
        ...

    def replica(
        self,
        *,
        name: str,
        launch: p.Launch,
        env: dict[str, str],
        log_name: str,
        on_exit: Callable[[ReplicaHandle, int], None] | None,
        health: HealthCheck | None,
    ) -> ReplicaHandle:
        """A replica on node ``launch.placement.node`` (not started yet)."""
        ...

    def close(self) -> None: ...


def connect(address: str) -> Cluster:
    """``ray`` (the local Ray cluster, or $RAY_ADDRESS), ``ray://HOST:PORT`` or ``HOST:PORT``."""
    from xinf.cluster.ray import RayCluster

    return RayCluster.connect(address)
