"""A Ray cluster of several nodes on 127.0.0.1, for the cluster tests and the Ray bench.

Every node is a real raylet (``ray.cluster_utils.Cluster``), kept small: one
CPU, an 80 MiB object store, no dashboard, a short private temp directory.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use the loopback address
(``LOOPBACK_ENV``: give it to ``xinf serve`` too).  Simulated GPUs are given
per node as that node's ``XINF_SIMULATED_GPUS``, as a real node would be
started with ``XINF_SIMULATED_GPUS=24GiB ray start --address=...``.

(In tools/, which pytest puts on ``sys.path``.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(LOOPBACK_ENV)  # read when Ray is imported, just below

from ray.cluster_utils import Cluster  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 << 20, "node_ip_address": "127.0.0.1"}


class LocalRayCluster:
    """``with LocalRayCluster([{}, {"XINF_SIMULATED_GPUS": "8GiB"}]) as c: c.address ...``

    The first node is the head (where a server on this machine attaches); each
    dict is the environment of one node's processes.
    """

    def __init__(self, nodes: list[dict[str, str]], client_port: int | None = None):
        self.specs = nodes
        self.client_port = client_port  # a Ray Client server on the head (ray://127.0.0.1:PORT)
        self.tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # unix socket paths must stay short
        self.cluster: Cluster | None = None
        self.saved_ray_tmpdir: str | None = None
        self.nodes: list[Any] = []

    @property
    def address(self) -> str:
        assert self.cluster is not None
        return str(self.cluster.address)

    def start(self) -> LocalRayCluster:
        head, *workers = self.specs
        # Ray writes the cluster's address to $RAY_TMPDIR/ray/ray_current_cluster (default /tmp/ray) whatever
        # temp_dir the nodes get, and fails where that folder does not exist (a brand-new machine): point it at
        # this cluster's own folder, created here and removed with it.
        os.makedirs(os.path.join(self.tmp, "ray"), exist_ok=True)
        self.saved_ray_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.tmp
        self.cluster = Cluster(
            initialize_head=True,
            shutdown_at_exit=True,
            head_node_args={
                **NODE,
                "include_dashboard": False,
                "temp_dir": self.tmp,
                "env_vars": {**LOOPBACK_ENV, **head},
                # a node that vanishes is declared dead after ~3 s rather than ~30 s
                "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
                **({"ray_client_server_port": self.client_port} if self.client_port else {}),
            },
        )
        self.nodes = [self.cluster.head_node]
        for env in workers:
            self.add_node(env)
        self.cluster.wait_for_nodes()
        return self

    def add_node(self, env: dict[str, str]) -> Any:
        assert self.cluster is not None
        node = self.cluster.add_node(**NODE, temp_dir=self.tmp, env_vars={**LOOPBACK_ENV, **env})
        self.nodes.append(node)
        return node

    def node_id(self, node: Any) -> str:
        return str(node.node_id)

    def remove_node(self, node: Any, graceful: bool = True) -> None:
        assert self.cluster is not None
        self.cluster.remove_node(node, allow_graceful=graceful)
        self.nodes.remove(node)

    def stop(self) -> None:
        if self.cluster is not None:
            try:
                self.cluster.shutdown()
            finally:
                self.cluster = None
                shutil.rmtree(self.tmp, ignore_errors=True)
                if self.saved_ray_tmpdir is None:
                    os.environ.pop("RAY_TMPDIR", None)
                else:
                    os.environ["RAY_TMPDIR"] = self.saved_ray_tmpdir

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
