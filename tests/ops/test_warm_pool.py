"""The warm pool (xinf.warmpool): launches take pre-started replica processes, the pool refills, never leaks.

Against a real ``xinf serve``; the pool's workers are found as the server's child processes whose command line is
``python -m xinf.replica --pool ENGINE SOCKET`` and whose output still goes to the pool's log.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from xinf.testing.server import ServerProcess
from xinf.testing.wait import wait_for

# Thread variables fixed in the server's environment: a replica's core set then implies no others, on any machine.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
POOLED = {**THREADS, "XINF_WARM_POOL_ENGINES": "test", "XINF_SIMULATED_GPUS": "24GiB"}


def children(pid: int) -> dict[int, list[str]]:
    """pid -> command line of each live process whose parent is ``pid``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out[int(entry)] = [a.decode() for a in cmdline if a]
    return out


def pool_workers(server: ServerProcess, engine: str = "test") -> set[int]:
    """The pool's workers not taken yet: a taken one writes to its replica's log, no longer to the pool's."""
    assert server.proc is not None
    started = {pid for pid, argv in children(server.proc.pid).items() if argv[-3:-1] == ["--pool", engine]}
    return {pid for pid in started if _output(pid).endswith(f"/logs/pool/{engine}.log")}


def _output(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return ""


def idle(server: ServerProcess, engine: str = "test") -> float:
    return server.metric("xinf_warm_pool_workers", engine=engine, state="idle")


def starts(server: ServerProcess, how: str) -> float:
    return server.metric("xinf_replica_starts_total", start=how)


def one_idle_worker(server: ServerProcess) -> int:
    """The pid of the pool's idle worker, once there is one."""
    wait_for(lambda: idle(server) == 1)
    (pid,) = pool_workers(server)
    return pid


def reply(server: ServerProcess, uid: str) -> str:
    response = server.http.post(
        "/v1/chat/completions", json={"model": uid, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def replica(server: ServerProcess, uid: str) -> dict:
    response = server.http.get(f"/v1/models/{uid}")
    assert response.status_code == 200
    return response.json()["replicas"][0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("pool"), env=POOLED) as server:
        yield server


def test_a_launch_takes_the_prestarted_worker_with_its_imports(server: ServerProcess) -> None:
    worker = one_idle_worker(server)
    server.launch(model_name="xinf-test-chat", model_uid="warm", script_preloaded="colorsys")
    first = replica(server, "warm")
    assert first["pid"] == worker and first["warm"] is True
    assert reply(server, "warm") == "colorsys True"  # imported ahead (the test engine's WARM_IMPORTS)
    assert starts(server, "warm") == 1
    server.http.delete("/v1/models/warm").raise_for_status()


def test_the_pool_refills_after_a_launch(server: ServerProcess) -> None:
    taken = one_idle_worker(server)
    server.launch(model_name="xinf-test-chat", model_uid="refill")
    assert replica(server, "refill")["pid"] == taken
    fresh = one_idle_worker(server)
    assert fresh != taken
    server.http.delete("/v1/models/refill").raise_for_status()


def test_the_worker_takes_the_devices_of_its_placement(server: ServerProcess) -> None:
    """Workers start with no device visible; the replica sees the one its placement gave it."""
    worker = one_idle_worker(server)
    assert "CUDA_VISIBLE_DEVICES=\0" in Path(f"/proc/{worker}/environ").read_text()
    server.launch(model_name="xinf-test-chat", model_uid="gpu", n_gpu=1, script_env="CUDA_VISIBLE_DEVICES")
    assert replica(server, "gpu")["pid"] == worker and replica(server, "gpu")["devices"] == [0]
    assert reply(server, "gpu") == "CUDA_VISIBLE_DEVICES=0"
    server.http.delete("/v1/models/gpu").raise_for_status()


def test_a_crashed_worker_is_replaced(server: ServerProcess) -> None:
    worker = one_idle_worker(server)
    os.kill(worker, signal.SIGKILL)
    fresh = wait_for(lambda: idle(server) == 1 and pool_workers(server) - {worker})
    assert worker not in fresh
    server.launch(model_name="xinf-test-chat", model_uid="after-crash")
    assert replica(server, "after-crash")["pid"] in fresh
    server.http.delete("/v1/models/after-crash").raise_for_status()


def test_a_launch_with_its_own_env_starts_cold_and_the_next_like_it_is_warm(server: ServerProcess) -> None:
    worker = one_idle_worker(server)
    cold_before = starts(server, "cold")
    envs = {"XINF_TEST_FLAVOUR": "mint"}
    server.launch(model_name="xinf-test-chat", model_uid="own-env", envs=envs, script_env="XINF_TEST_FLAVOUR")
    first = replica(server, "own-env")
    assert first["warm"] is False and first["pid"] != worker
    assert reply(server, "own-env") == "XINF_TEST_FLAVOUR=mint"
    assert starts(server, "cold") == cold_before + 1
    # The pool now makes its worker for launches like that one (the old one is stopped).
    wait_for(lambda: worker not in pool_workers(server))
    again = one_idle_worker(server)
    server.launch(model_name="xinf-test-chat", model_uid="own-env-2", envs=envs, script_env="XINF_TEST_FLAVOUR")
    assert replica(server, "own-env-2")["pid"] == again and replica(server, "own-env-2")["warm"] is True
    assert reply(server, "own-env-2") == "XINF_TEST_FLAVOUR=mint"
    for uid in ("own-env", "own-env-2"):
        server.http.delete(f"/v1/models/{uid}").raise_for_status()


def test_no_process_outlives_the_server(tmp_path: Path) -> None:
    """Neither the replica that took a worker, nor the worker that replaced it and was never used."""
    with ServerProcess(tmp_path, env=POOLED) as server:
        taken = one_idle_worker(server)
        server.launch(model_name="xinf-test-chat", model_uid="m")
        unused = one_idle_worker(server)
        assert server.proc is not None
        everything = set(children(server.proc.pid))
        assert {taken, unused} <= everything
    left = {pid for pid in everything if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)}
    assert left == set()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_the_pool_is_off_with_its_variable(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, env={**POOLED, "XINF_WARM_POOL": "0"}) as server:
        server.launch(model_name="xinf-test-chat", model_uid="m", script_preloaded="colorsys")
        assert replica(server, "m")["warm"] is False
        assert reply(server, "m") == "colorsys False"
        assert pool_workers(server) == set()
        assert "xinf_warm_pool_workers" not in httpx.get(f"{server.url}/metrics").text


# ---------------------------------------------------------------- the rules, without processes


def test_a_worker_fits_a_launch_whose_environment_differs_only_in_devices() -> None:
    from xinf.warmpool import Worker, profile

    base = {"PATH": "/usr/bin", "PYTHONUNBUFFERED": "1"}
    worker = Worker(("python", "test"), profile(base, [0, 1]))
    assert worker.fits({**base, "CUDA_VISIBLE_DEVICES": "3"}, [4, 5])  # other cores, as many: same thread counts
    assert not worker.fits(base, [0])  # one core: OMP_NUM_THREADS=1, read by OpenMP when it loaded
    assert not worker.fits({**base, "HF_HUB_OFFLINE": "1"}, [0, 1])  # a variable a library may read at import
    assert worker.fits({**base, "OMP_NUM_THREADS": "2"}, [0, 1])
    worker.driver = True  # its imports loaded a GPU driver while no device was visible
    assert not worker.fits({**base, "CUDA_VISIBLE_DEVICES": "3"}, [0, 1])
    assert worker.fits({**base, "CUDA_VISIBLE_DEVICES": ""}, [0, 1])


def test_the_total_goes_to_the_engines_launched_last(tmp_path: Path) -> None:
    from xinf.settings import Settings
    from xinf.warmpool import WarmPool

    pool = WarmPool(Settings(home=tmp_path, warm_pool=2, warm_pool_total=3), tmp_path, dict)
    for engine in ("a", "b", "c"):
        pool.profiles[("python", engine)] = {}
    assert pool.allotment() == {("python", "c"): 2, ("python", "b"): 1, ("python", "a"): 0}


def test_a_mapped_cuda_driver_counts_only_once_initialised() -> None:
    """torch may map libcuda at import without initialising it: the devices are read at cuInit, after Adopt."""
    from xinf.replica.warm import driver_loaded

    maps = "7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04\n"
    assert not driver_loaded(maps, cuda_initialised=lambda: False)
    assert driver_loaded(maps, cuda_initialised=lambda: True)
    assert driver_loaded("7f00-7f10 r-xp 0 0 0 /opt/rocm/lib/libamdhip64.so.6\n", cuda_initialised=lambda: False)
    assert not driver_loaded("7f00-7f10 r-xp 0 0 0 /usr/lib/libc.so.6\n", cuda_initialised=lambda: True)
    assert not driver_loaded()  # this test process has no GPU driver mapped
