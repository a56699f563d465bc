"""The models of one server: launching, placing, recovering, scaling and terminating them."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from xinf import adapters, hub, placement, projectors, virtualenv
from xinf.devices import inventory
from xinf.downloads import LaunchCancelled
from xinf.errors import Conflict, InvalidRequest, LaunchError, NotFound
from xinf.health import HealthMonitor
from xinf.localmodel import spec_from_path, with_path
from xinf.model import RunningModel
from xinf.plugins import PluginHost
from xinf.registry import Registry, _size
from xinf.replica import protocol as p
from xinf.replica.handle import HealthCheck, ProcessReplica, ReplicaHandle
from xinf.schemas import LaunchRequest
from xinf.settings import Settings
from xinf.types import Device, Hardware, MemoryEstimate, ModelSpec, Placement
from xinf.warmpool import WarmPool
from xinf.watchdog import ProgressWatchdog

if TYPE_CHECKING:
    from xinf.cluster import Cluster

log = logging.getLogger(__name__)

_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: '$' would let a trailing newline through
RESTART_LIMIT = 5  # restarts of one replica ...
RESTART_WINDOW = 300.0  # ... within this many seconds before giving up


class ModelManager:
    """All models of one server."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        plugins: PluginHost,
        *,
        hardware: Callable[[], Hardware] = inventory,
        cluster: Cluster | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.plugins = plugins
        self.cluster = cluster
        self.hardware = cluster.inventory if cluster is not None else hardware
        self.models: dict[str, RunningModel] = {}
        self.ledger = placement.Ledger()
        self.gpu_nodes: set[str | None] = set()  # machines with GPUs (None: this one, outside a cluster)
        self.rundir = Path(tempfile.mkdtemp(prefix="xinf-"))
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.health = HealthCheck(
            enabled=not settings.disable_health_check,
            failure_threshold=settings.health_check_failure_threshold,
            interval=settings.health_check_interval,
            timeout=settings.health_check_timeout,
        )
        self.monitor = HealthMonitor(self.models, self.health)
        self.watchdog = ProgressWatchdog(self.models, settings.stall_timeout)
        base = lambda: {**self._local_env(), "PYTHONUNBUFFERED": "1"}  # noqa: E731 (as _replica_env makes it)
        self.pool = WarmPool(settings, self.rundir, base) if settings.warm_pool and settings.warm_pool_total else None

    def open_pools(self) -> None:
        """Start the warm pools of ``XINF_WARM_POOL_ENGINES`` (called once the server's event loop runs)."""
        if self.pool is None:
            return
        for engine in self.settings.warm_pool_engines:
            info = self.plugins.engines.get(engine)
            if info is None or not info.ok:
                log.warning("XINF_WARM_POOL_ENGINES: engine %r is not installed here; no pool for it", engine)
                continue
            self.pool.open(engine, self.plugins.replica_env(engine))

    def get(self, uid: str) -> RunningModel:
        model = self.models.get(uid)
        if model is None:
            running = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model {uid!r} is not running (running: {running})", param="model", code="model_not_found")
        return model

    # ------------------------------------------------------------ launch

    def resolve(self, req: LaunchRequest, hardware: Hardware) -> tuple[ModelSpec, str]:
        """The spec to launch and the engine to serve it."""
        size = _size(req.model_size_in_billions)
        # xinference-client sends model_type "LLM" unless told otherwise: only another type is a constraint.
        kind = req.model_type if req.model_type not in (None, "LLM") else None
        if req.model_name and req.model_name.lower() in self.registry.families:
            candidates = self.registry.candidates(
                req.model_name, format=req.model_format, size_in_billions=size, quantization=req.quantization
            )
            if req.model_path:
                candidates = [with_path(c, req.model_path) for c in candidates]
        elif req.model_path:
            candidates = [spec_from_path(req.model_path, req.model_name, req.model_format, req.quantization, kind)]
        elif req.model_name:
            raise NotFound(
                f"model {req.model_name!r} is neither built in nor registered; register it or pass model_path",
                param="model_name",
            )
        else:
            raise InvalidRequest("give model_name or model_path", param="model_name")
        if kind is not None and candidates[0].model_type != kind:
            raise InvalidRequest(
                f"model {candidates[0].name!r} is a {candidates[0].model_type} model, not {kind}", param="model_type"
            )
        loras = adapters.from_config(req.peft_model_config)
        candidates = [adapters.with_adapters(c, loras) for c in candidates]
        first_error: InvalidRequest | None = None
        for spec in candidates:
            try:
                match = self.plugins.choose(spec, hardware, req.model_engine)
            except InvalidRequest as exc:
                first_error = first_error or exc
                continue
            return spec, match.engine
        assert first_error is not None
        raise first_error

    async def launch(self, req: LaunchRequest, options: dict[str, Any]) -> RunningModel:
        """Launch and wait until every replica is ready."""
        model = await self.prepare(req, options)
        await self.start(model)
        return model

    async def prepare(self, req: LaunchRequest, options: dict[str, Any]) -> RunningModel:
        """Check a launch and claim its uid; the model shows as "launching" until ``start`` ends."""
        hardware = await asyncio.to_thread(self.hardware)  # a cluster asks its nodes
        spec, engine = self.resolve(req, hardware)
        spec = projectors.choose(spec, req.multimodal_projector, options)  # GGUF vision models' mmproj
        uid = req.model_uid or spec.name
        if not _UID.match(uid):
            raise InvalidRequest(f"invalid model_uid {uid!r}: use letters, digits, '.', '_' and '-'", param="model_uid")
        adapters.check_uid(uid, spec.adapters)
        if req.enable_thinking is not None and not spec.is_reasoning:
            raise InvalidRequest(
                f"{spec.name} is not a reasoning model; enable_thinking does not apply", param="enable_thinking"
            )
        async with self._lock:
            if uid in self.models:
                raise Conflict(f"model_uid {uid!r} is already in use; terminate it first", param="model_uid")
            model = RunningModel(uid, spec, engine, req, options)
            model.routing = req.routing or self.settings.routing
            self.models[uid] = model
        return model

    async def start(self, model: RunningModel) -> None:
        """Find the files, place the replicas and start them; undo everything on failure."""
        uid, spec = model.uid, model.spec
        began = time.monotonic()
        try:
            path = await asyncio.to_thread(
                hub.local_path, spec, self.settings, hub=model.request.download_hub, job=model.download
            )
            if path is not None:
                spec.source = msgspec.structs.replace(spec.source, path=path)
            if model.cancelled:
                raise LaunchCancelled(f"the launch of {uid!r} was cancelled", code="cancelled")
            packages = virtualenv.wanted(
                self.settings,
                model.request.enable_virtual_env,
                self._engine_packages(model.engine),
                model.request.virtual_env_packages,
            )
            if packages:
                model.python = await asyncio.to_thread(
                    virtualenv.ensure, self.settings, model.engine, packages, model.request.virtual_env_find_links
                )
            hardware = await asyncio.to_thread(self.hardware)
            placements = self._place(model, hardware, model.request.replica, model.request, 0)
            model.replicas = self._reserve(model, placements)  # listed before they start: cancel() stops them
            placed = time.monotonic()
            failure = await _start_all(model.replicas, self.settings.launch_timeout)
            if model.cancelled:
                raise LaunchCancelled(f"the launch of {uid!r} was cancelled while loading", code="cancelled")
            if failure is not None:
                raise failure
        except BaseException as exc:
            if isinstance(exc, LaunchCancelled):
                log.info("launch of %s cancelled", uid)
            model.status = "failed"
            model.error = str(exc)
            self.models.pop(uid, None)
            await self._roll_back(model.replicas, [f"{uid}/"])
            raise
        model.status = "ready"
        self.monitor.start()
        self.watchdog.start()
        log.info("model %s ready: %s on %s, %d replica(s)", uid, spec.name, model.engine, len(model.replicas))
        log.debug(
            "launch of %s: files and placement %.3fs, replicas %.3fs", uid, placed - began, time.monotonic() - placed
        )

    def _engine_packages(self, engine: str) -> list[str]:
        """What the engine plugin asks to have installed in a model's virtual environment."""
        module = self.plugins.pm.get_plugin(engine)
        return list(getattr(module, "VIRTUAL_ENV_PACKAGES", []) or [])

    def _place(
        self,
        model: RunningModel,
        hardware: Hardware,
        replicas: int,
        req: LaunchRequest,
        first: int,
        like: int | None = None,
    ) -> list[Placement]:
        """Where ``replicas`` replicas of ``model`` go, numbered from ``first`` (reserves nothing).

        ``like``: cores per replica when the model's other replicas already have that many.

        Also notes which machines have GPUs: ``_replica`` hides the GPUs from a CPU replica there.
        """
        self.gpu_nodes = {d.node for d in hardware.devices}
        estimate_fn = (
            self.plugins.hook(model.engine, "estimate_vram")
            if self.plugins.has_hook(model.engine, "estimate_vram")
            else None
        )

        def estimate(devices: list[Device]) -> MemoryEstimate | None:
            if estimate_fn is None:
                return None
            try:
                result: MemoryEstimate | None = estimate_fn(spec=model.spec, options=model.options, devices=devices)
                return result
            except (InvalidRequest, LaunchError):
                raise
            except Exception as exc:
                log.warning("estimate_vram of %s failed, placing by count: %s", model.engine, exc)
                return None

        return placement.plan(
            uid=model.uid,
            replicas=replicas,
            hardware=hardware,
            ledger=self.ledger,
            estimate=estimate,
            n_gpu=_n_gpu(req.n_gpu),
            gpu_idx=[req.gpu_idx] if isinstance(req.gpu_idx, int) else req.gpu_idx,
            strategy=self.settings.launch_strategy,
            allow_multi_replica=self.settings.allow_multi_replica_per_gpu,
            first_replica=first,
            worker_ip=req.worker_ip,
            cores_per_replica=self.settings.cpu_cores_per_replica if like is None else like,
        )

    def _core_count(self, pl: Placement) -> int | None:
        """Cores a replica like ``pl`` gets (added, or moved to another node): as many as it has, by default."""
        return len(pl.cores) if self.settings.cpu_cores_per_replica is None and pl.cores else None

    def _replica(self, model: RunningModel, pl: Any) -> ReplicaHandle:
        index = pl.replica
        name = f"replica {index} of {model.uid}"
        on_exit = lambda r, code, m=model: self._on_exit(m, r, code)  # noqa: E731
        if self.cluster is not None and pl.node is not None and pl.node != self.cluster.local_node:
            # Another machine: its own environment, plus what the model asks for and the device visibility.
            env = self._replica_env(model, pl, base={})
            if model.python != sys.executable:
                log.warning("%s runs on another node: the model's virtual environment is not used there", name)
            remote = self.cluster.replica(
                name=name,
                launch=self._launch(model, pl),
                env=env,
                log_name=f"{model.uid}/replica-{index}.log",
                on_exit=on_exit,
                health=self.health,
            )
            remote.deadline = self.settings.request_timeout
            return remote
        handle = ProcessReplica(
            name=name,
            launch=self._launch(model, pl),
            env=self._replica_env(model, pl, base=self._local_env()),
            log_path=self.settings.home / "logs" / "models" / model.uid / f"replica-{index}.log",
            socket_path=self.rundir / f"{abs(hash(model.uid)) % 10**8}-{index}-{time.monotonic_ns() % 10**6}.sock",
            python=model.python,
            on_exit=on_exit,
            health=self.health,
            pool=self.pool,
        )
        handle.deadline = self.settings.request_timeout
        return handle

    @staticmethod
    def _local_env() -> dict[str, str]:
        """The server's environment less its secrets: what a replica on this machine starts from."""
        env = dict(os.environ)
        env.pop("XINF_API_KEY", None)  # replicas never need the server's key; an engine could print its env
        env.pop("XINFERENCE_CSG_TOKEN", None)
        return env

    def _replica_env(self, model: RunningModel, pl: Any, *, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus the model's ``envs``, its engine's ``REPLICA_ENV`` where neither sets the variable, the
        devices it may see, and unbuffered output."""
        env = {**self.plugins.replica_env(model.engine), **base, **(model.request.envs or {})}
        if pl.node in self.gpu_nodes or pl.devices:  # a CPU replica on a GPU machine sees no GPU
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in pl.devices)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _reserve(self, model: RunningModel, placements: list[Any]) -> list[ReplicaHandle]:
        """Reserve each placement's memory and make its replica (not started yet)."""
        for pl in placements:
            self.ledger.add(f"{model.uid}/{pl.replica}", pl)
        return [self._replica(model, pl) for pl in placements]

    async def _roll_back(self, replicas: list[ReplicaHandle], reservations: list[str]) -> None:
        """Stop replicas that were started together, then release their reservations."""
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        for owner in reservations:
            self.ledger.release(owner)

    @staticmethod
    def _launch(model: RunningModel, pl: Any) -> p.Launch:
        return p.Launch(
            engine=model.engine,
            spec=model.spec,
            options=model.options,
            placement=pl,
            enable_thinking=model.request.enable_thinking,
        )

    # ------------------------------------------------------------ recovery

    def _on_exit(self, model: RunningModel, replica: ReplicaHandle, code: int) -> None:
        if self.models.get(model.uid) is not model:
            return
        task = asyncio.get_running_loop().create_task(self._restart(model, replica))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart(self, model: RunningModel, dead: ReplicaHandle) -> None:
        index = dead.index
        now = time.monotonic()
        recent = [t for t in model.restarts.get(index, []) if now - t < RESTART_WINDOW]
        if len(recent) >= RESTART_LIMIT:
            dead.status = "failed"
            model.error = (
                f"replica {index} crashed {len(recent) + 1} times in {RESTART_WINDOW:.0f}s "
                f"(last exit code {dead.returncode}); gave up after {len(recent)} restarts. Log: {dead.log}"
            )
            if not any(r.ready for r in model.replicas):
                model.status = "failed"
            self.ledger.release(f"{model.uid}/{index}")
            log.error("model %s: %s", model.uid, model.error)
            return
        model.restarts[index] = [*recent, now]
        model.restart_count[index] = model.restart_count.get(index, 0) + 1
        await asyncio.sleep(min(8.0, 0.25 * 2 ** len(recent)))
        if self.models.get(model.uid) is not model:
            return
        if dead not in model.replicas:
            return  # removed meanwhile
        try:
            where = await self._replace(model, dead)
        except LaunchError as exc:
            log.error("%s cannot be placed again: %s", dead.name, exc)
            model.error = f"replica {index} lost its node and fits on no other: {exc.message}"
            dead.status = "dead"
            self._on_exit(model, dead, dead.returncode or -1)  # tried again after a back-off, up to the limit
            return
        fresh = self._replica(model, where)
        model.replicas[model.replicas.index(dead)] = fresh
        model.prefixes.forget(index)  # the new process holds no prompt yet
        try:
            await fresh.start()
            log.info("%s restarted", fresh.name)
        except Exception as exc:
            log.error("restarting %s failed: %s", fresh.name, exc)
            fresh.status = "dead"
            self._on_exit(model, fresh, fresh.returncode or -1)

    async def _replace(self, model: RunningModel, dead: ReplicaHandle) -> Any:
        """Where a dead replica starts again: where it was, unless its cluster node has gone."""
        where = dead.launch.placement
        if self.cluster is None or where.node is None:
            return where
        hardware = await asyncio.to_thread(self.hardware)
        if any(n.id == where.node for n in hardware.nodes):
            return where
        key = f"{model.uid}/{dead.index}"
        self.ledger.release(key)
        [fresh] = self._place(model, hardware, 1, model.request, dead.index, like=self._core_count(where))
        self.ledger.add(key, fresh)
        log.warning("%s lost node %s; placing it on node %s", dead.name, where.node[:12], (fresh.node or "")[:12])
        return fresh

    # ------------------------------------------------------------ scaling

    async def add_replicas(self, uid: str, count: int, n_gpu: int | str | None = "auto") -> list[int]:
        """Start ``count`` more replicas of a ready model, placed like the first ones."""
        model = self.get(uid)
        if model.status != "ready":
            raise Conflict(f"model {uid!r} is {model.status}; replicas can be added once it is ready")
        first = max((r.index for r in model.replicas), default=-1) + 1
        request = msgspec.structs.replace(model.request, n_gpu=n_gpu) if n_gpu != "auto" else model.request
        hardware = await asyncio.to_thread(self.hardware)
        like = self._core_count(model.replicas[0].launch.placement) if model.replicas else None
        placements = self._place(model, hardware, count, request, first, like=like)
        fresh = self._reserve(model, placements)
        failure = await _start_all(fresh)
        if failure is not None:
            await self._roll_back(fresh, [f"{uid}/{pl.replica}" for pl in placements])
            raise failure
        model.replicas.extend(fresh)
        return [r.index for r in fresh]

    async def remove_replica(self, uid: str, index: int) -> int:
        """Stop one replica and release its reservation; returns how many remain."""
        model = self.get(uid)
        replica = next((r for r in model.replicas if r.index == index), None)
        if replica is None:
            have = ", ".join(str(r.index) for r in model.replicas)
            raise NotFound(f"model {uid!r} has no replica {index} (replicas: {have})", param="replica_id")
        if len(model.replicas) == 1:
            raise InvalidRequest(f"replica {index} is the last of {uid!r}; terminate the model instead")
        model.replicas.remove(replica)
        await replica.stop()
        self.ledger.release(f"{uid}/{index}")
        return len(model.replicas)

    def dry_run(self, req: LaunchRequest, options: dict[str, Any]) -> tuple[RunningModel, list[Any]]:
        """What a launch would do: the engine and each replica's placement. Starts nothing."""
        hardware = self.hardware()
        spec, engine = self.resolve(req, hardware)
        spec = projectors.choose(spec, req.multimodal_projector, options)
        model = RunningModel(req.model_uid or spec.name, spec, engine, req, options)
        path = hub.local_path(spec, self.settings, download=False)
        if path is not None:
            spec.source = msgspec.structs.replace(spec.source, path=path)
        return model, self._place(model, hardware, req.replica, req, 0)

    # ------------------------------------------------------------ progress

    def progress(self, uid: str) -> dict[str, Any]:
        """How far a launch got: the download's fraction while downloading, 1.0 once ready."""
        model = self.get(uid)
        info = model.download.describe()
        if model.status == "ready":
            fraction = 1.0
        elif model.download.counter.total:
            fraction = model.download.fraction
        else:
            fraction = 0.0
        return {"progress": fraction, "status": model.status, **info}

    async def cancel(self, uid: str) -> None:
        """Cancel a launch that is downloading or loading; the launch then fails with code "cancelled"."""
        model = self.get(uid)
        if model.status != "launching":
            raise Conflict(f"model {uid!r} is {model.status}, not launching; terminate it instead", param="model_uid")
        model.cancelled = True
        model.download.cancel()
        await asyncio.gather(*(r.stop(timeout=5) for r in model.replicas), return_exceptions=True)

    def paths_in_use(self) -> list[str]:
        """Model files and interpreters of launched models: the cache must not delete them."""
        paths = [m.spec.source.path for m in self.models.values() if m.spec.source.path]
        return paths + [m.python for m in self.models.values()]

    # ------------------------------------------------------------ terminate

    async def terminate(self, uid: str) -> None:
        model = self.get(uid)
        if model.status == "launching":
            raise Conflict(f"model {uid!r} is still launching", param="model_uid")
        model.status = "terminating"
        del self.models[uid]
        await asyncio.gather(*(r.stop() for r in model.replicas), return_exceptions=True)
        self.ledger.release(f"{uid}/")

    async def shutdown(self) -> None:
        models = list(self.models.values())
        self.models.clear()
        self.monitor.stop()
        self.watchdog.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(r.stop(timeout=5) for m in models for r in m.replicas), return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()
        if self.cluster is not None:
            self.cluster.close()
        try:
            os.rmdir(self.rundir)
        except OSError:
            pass


async def _start_all(replicas: list[ReplicaHandle], timeout: float | None = None) -> BaseException | None:
    """Start replicas together and wait for all of them; the first failure, if any.

    ``timeout`` (XINF_LAUNCH_TIMEOUT): a replica not loaded by then is stopped and fails the launch.
    """

    async def one(replica: ReplicaHandle) -> None:
        try:
            await asyncio.wait_for(replica.start(), timeout or None)
        except asyncio.TimeoutError:
            raise LaunchError(
                f"{replica.name} did not load within {timeout:g}s (XINF_LAUNCH_TIMEOUT); it was stopped"
            ) from None

    results = await asyncio.gather(*(one(r) for r in replicas), return_exceptions=True)
    return next((r for r in results if isinstance(r, BaseException)), None)


def _n_gpu(value: int | str | None) -> int | None:
    """Xinference's n_gpu: "auto" -> None (decide), None -> 0 (CPU only), else a count."""
    if value is None:
        return 0
    if isinstance(value, str):
        if value.lower() == "auto":
            return None
        if value.isdigit():
            return int(value)
        raise InvalidRequest(f"n_gpu must be a number, 'auto' or null, not {value!r}", param="n_gpu")
    if value < 0:
        raise InvalidRequest("n_gpu must not be negative", param="n_gpu")
    return value
