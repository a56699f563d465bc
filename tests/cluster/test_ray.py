"""xinf serve --cluster: a real Ray cluster of several nodes on 127.0.0.1, replicas in Ray actors.

Each node is a raylet of its own (1 CPU, small object store, no dashboard) with
its own simulated GPUs, as separate machines would have.  The server attaches
to the head node: replicas placed there are local processes, the others are
Ray actors on their nodes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from xinf.cores import ranges
from xinf.testing.server import ServerProcess, free_port
from xinf.testing.wait import wait_for

# raycluster points Ray at the loopback address before importing it; skipped where Ray is not installed.
raycluster = pytest.importorskip("raycluster")
LOOPBACK_ENV = raycluster.LOOPBACK_ENV
LocalRayCluster = raycluster.LocalRayCluster

GiB = 1 << 30
HELLO = [{"role": "user", "content": "hello"}]


def xinf(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", *args, "-e", server.url], capture_output=True, text=True, timeout=120
    )


def replicas(server: ServerProcess, uid: str) -> list[dict[str, Any]]:
    return server.http.get(f"/v1/models/{uid}").json()["replicas"]  # type: ignore[no-any-return]


class Setup:
    """A cluster and a server joined to it; node i's environment is ``envs[i]``."""

    def __init__(
        self,
        home: Path,
        envs: list[dict[str, str]],
        server_env: dict[str, str] | None = None,
        client: bool = False,
    ):
        homes = [{"XINFERENCE_HOME": str(home / f"node{i}")} for i in range(len(envs))]
        port = free_port() if client else None
        self.cluster = LocalRayCluster([{**h, **e} for h, e in zip(homes, envs)], client_port=port).start()
        try:
            self.server = ServerProcess(
                home / "node0",  # the head node's home: the server runs there
                env={**LOOPBACK_ENV, **(server_env or {})},
                args=["--cluster", f"ray://127.0.0.1:{port}" if client else self.cluster.address],
                startup_timeout=120,
            ).start()
        except BaseException:
            self.cluster.stop()
            raise
        self.ids = [self.cluster.node_id(n) for n in self.cluster.nodes]

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.cluster.stop()


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Head (the server's node) with one 16 GiB GPU, a node with two, a CPU-only node."""
    setup = Setup(
        tmp_path_factory.mktemp("ray"),
        [{}, {"XINF_SIMULATED_GPUS": "16GiB,16GiB"}, {}],
        server_env={"XINF_SIMULATED_GPUS": "16GiB"},
    )
    yield setup
    setup.stop()


@pytest.fixture
def client(three: Setup) -> Iterator[openai.OpenAI]:
    client = three.server.openai()
    yield client
    client.close()


def test_every_node_and_its_devices_are_in_the_inventory(three: Setup) -> None:
    head, gpus, cpu = three.ids
    data = three.server.http.get("/v1/cluster/devices").json()
    assert data["cluster"] == three.cluster.address
    assert [n["id"] for n in data["nodes"]] == [head, *sorted([gpus, cpu])]
    assert [n["local"] for n in data["nodes"]] == [True, False, False]
    assert [(n["address"], n["memory_total"] > 0) for n in data["nodes"]] == [("127.0.0.1", True)] * 3
    assert sorted((d["node"], d["index"], d["total_memory"]) for d in data["devices"]) == sorted(
        [(head, 0, 16 * GiB), (gpus, 0, 16 * GiB), (gpus, 1, 16 * GiB)]
    )
    table = xinf(three.server, "devices").stdout
    assert table.splitlines()[0].split()[:4] == ["NODE", "ADDRESS", "HOST", "CPUS"]
    assert all(node[:12] in table for node in three.ids)
    assert "(this server)" in table
    assert "Simulated GPU 1" in table


def test_replicas_spread_over_nodes_with_their_devices_and_env(three: Setup, client: openai.OpenAI) -> None:
    head, gpus = three.ids[:2]
    server = three.server
    server.launch(
        model_name="xinf-test-chat", model_uid="gpu", replica=3, vram=8 * GiB, script_env="CUDA_VISIBLE_DEVICES"
    )
    try:
        placed = [(r["node"], r["devices"], r["status"]) for r in replicas(server, "gpu")]
        # The most free memory first: the head's GPU, then the other node's two.
        assert placed == [(head, [0], "ready"), (gpus, [0], "ready"), (gpus, [1], "ready")]
        remote = [r for r in replicas(server, "gpu") if r["node"] != head]
        assert all(r["log"].startswith("127.0.0.1:") for r in remote)  # a log on its node
        seen = Counter(
            client.chat.completions.create(model="gpu", messages=HELLO, max_tokens=50).choices[0].message.content
            for _ in range(3)
        )
        # Each replica sees only its own device, as a local replica does.
        assert seen == {"CUDA_VISIBLE_DEVICES=0": 2, "CUDA_VISIBLE_DEVICES=1": 1}
        devices = server.http.get("/v1/cluster/devices").json()["devices"]
        assert {(d["node"], d["index"]): d["replicas"] for d in devices} == {
            (head, 0): ["gpu/0"],
            (gpus, 0): ["gpu/1"],
            (gpus, 1): ["gpu/2"],
        }

        # CPU replicas: the per-model env reaches replicas in Ray actors; a streamed answer is the same.
        server.launch(
            model_name="xinf-test-chat", model_uid="cpu", replica=3, n_gpu=None, envs={"GREETING": "hello"},
            script_env="GREETING",
        )  # fmt: skip
        nodes = [r["node"] for r in replicas(server, "cpu")]
        assert set(nodes) - {head}, "a CPU replica went to another node"
        for r in replicas(server, "cpu"):  # each node's cores placed apart; actors pin themselves like processes
            assert r["cores"] and r["threads"] == len(r["cores"])
            status = Path(f"/proc/{r['pid']}/status").read_text()
            assert f"Cpus_allowed_list:\t{ranges(r['cpus'])}\n" in status
        answers = {
            client.chat.completions.create(model="cpu", messages=HELLO, max_tokens=50).choices[0].message.content
            for _ in range(3)
        }
        assert answers == {"GREETING=hello"}
        stream = client.chat.completions.create(model="cpu", messages=HELLO, max_tokens=50, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "GREETING=hello"
    finally:
        server.http.delete("/v1/models/gpu")
        server.http.delete("/v1/models/cpu")
    assert all(not d["replicas"] for d in server.http.get("/v1/cluster/devices").json()["devices"])


def test_worker_ip_pins_replicas_and_a_disconnect_reaches_the_remote_engine(
    three: Setup, client: openai.OpenAI, tmp_path: Path
) -> None:
    cpu = three.ids[2]
    server = three.server
    events = tmp_path / "events"
    refused = server.http.post("/v1/models", json={"model_name": "xinf-test-chat", "worker_ip": "10.9.9.9"})
    assert refused.status_code == 400
    assert "worker_ip '10.9.9.9' is not a node of the cluster" in refused.json()["error"]["message"]
    server.launch(
        model_name="xinf-test-chat", model_uid="pinned", replica=2, n_gpu=None, worker_ip=cpu, token_delay=0.05,
        events=str(events),
    )  # fmt: skip
    try:
        assert [r["node"] for r in replicas(server, "pinned")] == [cpu, cpu]
        stream = client.chat.completions.create(model="pinned", messages=HELLO, max_tokens=2000, stream=True)
        for n, _chunk in enumerate(stream):
            if n == 3:
                break
        stream.close()  # the client goes away mid-answer
        assert wait_for(lambda: events.read_text().split() == ["start", "closed"], timeout=30)
        reply = client.chat.completions.create(model="pinned", messages=HELLO, max_tokens=3)
        assert reply.usage.completion_tokens == 3
        assert events.read_text().split() == ["start", "closed", "start", "finished"]
    finally:
        server.http.delete("/v1/models/pinned")


def test_dry_run_names_the_node(three: Setup) -> None:
    gpus = three.ids[1]
    out = xinf(three.server, "launch", "-n", "xinf-test-chat", "--worker-ip", gpus, "-r", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:3] == ["REPLICA", "NODE", "DEVICES"]
    assert [line.split()[1] for line in lines[2:]] == [gpus[:12], gpus[:12]]


@pytest.mark.slow
def test_llamacpp_on_a_remote_node(three: Setup, client: openai.OpenAI) -> None:
    cpu = three.ids[2]
    three.server.launch(
        model_name="smollm2-instruct", model_uid="smol", worker_ip=cpu, n_gpu=None, n_ctx=1024, n_parallel=1,
        n_threads=1,
    )  # fmt: skip
    try:
        assert [(r["node"], r["status"]) for r in replicas(three.server, "smol")] == [(cpu, "ready")]
        question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        reply = client.chat.completions.create(model="smol", messages=question, max_tokens=20, temperature=0)
        assert "Paris" in reply.choices[0].message.content
        stream = client.chat.completions.create(
            model="smol", messages=question, max_tokens=20, temperature=0, stream=True
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content
        )
    finally:
        three.server.http.delete("/v1/models/smol")


def test_a_lost_node_ends_its_streams_cleanly_and_its_replica_moves(tmp_path: Path) -> None:
    setup = Setup(tmp_path, [{}, {}, {}])
    try:
        server = setup.server
        server.launch(model_name="xinf-test-chat", model_uid="m", replica=3, token_delay=0.05)
        assert sorted(r["node"] for r in replicas(server, "m")) == sorted(setup.ids)  # one per node
        victim = setup.cluster.nodes[1]
        lost = setup.cluster.node_id(victim)
        moved = next(r["index"] for r in replicas(server, "m") if r["node"] == lost)

        async def chat(client: openai.AsyncOpenAI) -> str:
            text = ""
            try:
                stream = await client.chat.completions.create(model="m", messages=HELLO, max_tokens=100, stream=True)
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].finish_reason:
                        return f"finished: {chunk.choices[0].finish_reason}"
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
            except openai.APIError as exc:
                return f"error after {len(text.split())} words: {exc.message}"
            return "no finish_reason"

        async def crowd() -> list[str]:
            client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
            try:
                tasks = [asyncio.ensure_future(chat(client)) for _ in range(6)]
                await asyncio.sleep(1.0)  # every stream is under way
                await asyncio.to_thread(setup.cluster.remove_node, victim, False)  # the machine vanishes
                return await asyncio.wait_for(asyncio.gather(*tasks), 120)
            finally:
                await client.close()

        outcomes = asyncio.run(crowd())
        errors = [o for o in outcomes if o.startswith("error")]
        assert len(errors) == 2, outcomes  # the two streams on the lost node (least-busy routing: two per replica)
        assert all("stopped while generating" in e and "was lost" in e for e in errors), errors
        assert all(int(e.split()[2]) >= 5 for e in errors), errors  # they had been streaming
        assert outcomes.count("finished: length") == 4, outcomes

        # The model keeps serving, and the lost replica starts again on a node that is still there.
        with server.openai() as client:
            assert client.chat.completions.create(model="m", messages=HELLO, max_tokens=2).usage.completion_tokens == 2
            again = wait_for(
                lambda: next(r for r in replicas(server, "m") if r["index"] == moved and r["status"] == "ready"), 60
            )
            assert again["node"] in set(setup.ids) - {lost}
            assert all(r["status"] == "ready" for r in replicas(server, "m"))
            answers = [
                client.chat.completions.create(model="m", messages=HELLO, max_tokens=3).usage.completion_tokens
                for _ in range(3)
            ]
            assert answers == [3, 3, 3]
        nodes = server.http.get("/v1/cluster/devices").json()["nodes"]
        assert lost not in [n["id"] for n in nodes] and len(nodes) == 2
    finally:
        setup.stop()


# Ray leaves its client server's log file open in the process that starts the head (this one).
@pytest.mark.filterwarnings("ignore:Exception ignored in.*ray_client_server:pytest.PytestUnraisableExceptionWarning")
def test_through_ray_client_every_replica_is_an_actor(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc") is None:  # not imported here: Ray's client server would not start
        pytest.skip("ray:// needs ray[client]")
    setup = Setup(tmp_path, [{}, {"XINF_SIMULATED_GPUS": "8GiB"}], client=True)
    try:
        server = setup.server
        nodes = server.http.get("/v1/cluster/devices").json()["nodes"]
        assert sorted(n["id"] for n in nodes) == sorted(setup.ids)
        assert not any(n["local"] for n in nodes)  # the server is outside the cluster
        server.launch(model_name="xinf-test-chat", replica=2, n_gpu=None, script_env="CUDA_VISIBLE_DEVICES")
        placed = replicas(server, "xinf-test-chat")
        assert sorted(r["node"] for r in placed) == sorted(setup.ids)
        assert all(r["log"].startswith("127.0.0.1:") for r in placed)  # both are actors, logging on their node
        with server.openai() as client:
            answers = Counter(
                client.chat.completions.create(model="xinf-test-chat", messages=HELLO, max_tokens=9)
                .choices[0]
                .message.content
                for _ in range(2)
            )
            # The CPU replica on the node with a GPU sees none; the one on the CPU node is left alone.
            assert answers == {"CUDA_VISIBLE_DEVICES=": 1, "CUDA_VISIBLE_DEVICES=<unset>": 1}
    finally:
        setup.stop()


def test_without_cluster_ray_is_never_imported(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        f"            open({str(blocked)!r}, 'a').write(name + '\\n')\n"
        "            raise ImportError('ray is blocked here')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {"PYTHONPATH": str(site)}
    server = start_server(env=env)
    server.launch(model_name="xinf-test-chat", replica=2)
    with server.openai() as client:
        reply = client.chat.completions.create(model="xinf-test-chat", messages=HELLO, max_tokens=3)
    assert reply.usage.completion_tokens == 3
    assert server.http.get("/v1/cluster/devices").json()["nodes"] == []
    assert not blocked.exists(), blocked.read_text()

    # Asking for a cluster without Ray installed says what to install.
    out = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "serve", "--cluster", "ray", "--port", "1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode == 1
    assert "--cluster needs Ray: pip install 'xinf[ray]'" in out.stderr
    assert blocked.read_text().split() == ["ray"]
