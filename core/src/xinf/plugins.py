"""Finding, loading and asking engine plugins.

Each entry point in the ``xinf.engines`` group is loaded on its own, so one
plugin that fails to import (or implements a hook wrongly) is recorded with its
error while the others keep working.  ``XINF_PLUGINS=a,b`` limits loading to
the named engines; ``XINF_TRACE_PLUGINS=1`` reports every hook call on stderr
(``xinf.plugintrace``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import msgspec
import pluggy

from xinf import hookspecs, plugintrace
from xinf.errors import InvalidRequest
from xinf.types import EngineMatch, Hardware, ModelSpec

log = logging.getLogger(__name__)

GROUP = "xinf.engines"
SERVING_HOOKS = ("estimate_vram", "load", "generate", "embed", "unload")


class EngineInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An installed engine plugin, working or not."""

    name: str
    module: str = ""
    distribution: str = ""
    version: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PluginHost:
    """The engine plugins known to this process, and the ranking between them."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.engines: dict[str, EngineInfo] = {}
        self.trace = plugintrace.enabled()

    # ------------------------------------------------------------ loading

    @classmethod
    def discover(cls, only: Iterable[str] | None = None) -> PluginHost:
        """Load every plugin of the entry-point group (or ``only`` those named)."""
        host = cls()
        allow = _allowlist() if only is None else set(only)
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            if allow is not None and ep.name not in allow:
                continue
            host.load_entry_point(ep)
        return host

    def load_entry_point(self, ep: EntryPoint) -> EngineInfo:
        dist = getattr(ep, "dist", None)
        info = EngineInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist.name if dist else "",
            version=dist.version if dist else "",
        )
        if ep.name in self.engines:
            # Two distributions claim one engine name: keep the first, say so.
            info.error = f"engine name {ep.name!r} is already provided by {self.engines[ep.name].module}"
            log.warning("plugin %s not loaded: %s", ep.value, info.error)
            self.engines[f"{ep.name} ({ep.value})"] = info
            return info
        try:
            plugin = ep.load()
            self._register(ep.name, plugin)
        except BaseException as exc:  # a plugin must never take the host down
            if isinstance(exc, KeyboardInterrupt):
                raise
            info.error = f"{type(exc).__name__}: {exc}"
            log.warning("engine plugin %r failed to load: %s", ep.name, info.error)
        self.engines[ep.name] = info
        return info

    def register(self, name: str, plugin: object) -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self._register(name, plugin)
        self.engines[name] = EngineInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)))

    def unregister(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.engines.pop(name, None)

    def _register(self, name: str, plugin: object) -> None:
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(name=name)
            raise

    # ------------------------------------------------------------ asking

    def replica_env(self, engine: str) -> dict[str, str]:
        """The variables ``engine``'s plugin asks its replica processes to start with (its ``REPLICA_ENV``)."""
        plugin = self.pm.get_plugin(engine)
        return {str(k): str(v) for k, v in (getattr(plugin, "REPLICA_ENV", None) or {}).items()}

    @property
    def working(self) -> list[str]:
        return sorted(name for name, info in self.engines.items() if info.ok)

    def match(self, spec: ModelSpec, hardware: Hardware) -> list[EngineMatch]:
        """Every engine's answer for ``spec``, best first, refusals last with reasons.

        Broken plugins appear as refusals carrying their load error.
        """
        answers: list[EngineMatch] = []
        for name, info in sorted(self.engines.items()):
            if not info.ok:
                answers.append(EngineMatch(engine=name, score=0, reason=f"plugin failed to load: {info.error}"))
                continue
            impl = self._implementation(name, "match_model")
            if impl is None:
                answers.append(EngineMatch(engine=name, score=0, reason="plugin has no match_model hook"))
                continue
            try:
                answer = impl(spec=spec, hardware=hardware)
            except Exception as exc:
                log.exception("match_model of engine %r raised", name)
                answer = EngineMatch(engine=name, score=0, reason=f"match_model raised {type(exc).__name__}: {exc}")
            if answer is None:
                answer = EngineMatch(engine=name, score=0, reason="does not serve this kind of model")
            answer.engine = name  # the entry-point name is authoritative
            answers.append(answer)
        answers.sort(key=lambda m: (-m.score if m.ok else 1, m.engine))
        return answers

    def choose(self, spec: ModelSpec, hardware: Hardware, engine: str | None = None) -> EngineMatch:
        """The engine to serve ``spec``: ``engine`` if given and able, else the best match.

        Raises ``InvalidRequest`` listing every engine's reason when none can.
        """
        answers = self.match(spec, hardware)
        if engine:
            for answer in answers:
                if answer.engine.lower() == engine.lower():
                    if answer.ok or answer.explicit_only:
                        return answer
                    raise InvalidRequest(
                        f"engine {answer.engine!r} cannot serve {spec.name!r}: {answer.reason}",
                        param="model_engine",
                    )
            raise InvalidRequest(
                f"unknown engine {engine!r}; installed engines: {', '.join(sorted(self.engines)) or 'none'}",
                param="model_engine",
            )
        if answers and answers[0].ok:
            return answers[0]
        reasons = "; ".join(f"{a.engine}: {a.reason}" for a in answers) or "no engine plugin is installed"
        raise InvalidRequest(f"no installed engine can serve {spec.name!r} ({spec.format}): {reasons}")

    def hook(self, engine: str, name: str) -> Callable[..., Any]:
        """The one implementation of hook ``name`` in ``engine``, to call directly.

        Serving hooks are never broadcast: calling the function itself keeps the
        per-request dispatch cost to one Python call.
        """
        call = self._implementation(engine, name)
        if call is None:
            raise LookupError(f"engine {engine!r} does not implement {name}")
        return call

    def has_hook(self, engine: str, name: str) -> bool:
        return self._implementation(engine, name) is not None

    def _implementation(self, engine: str, name: str) -> Callable[..., Any] | None:
        """The implementation as a plain function taking the hook's keyword arguments.

        Like pluggy, pass an implementation only the arguments it declares.
        """
        caller = getattr(self.pm.hook, name)
        for impl in caller.get_hookimpls():
            if impl.plugin_name != engine:
                continue
            declared = set(impl.argnames)
            function: Callable[..., Any] = impl.function
            if not declared >= set(caller.spec.argnames):
                function = _subset_caller(function, declared)
            return plugintrace.traced(engine, name, function) if self.trace else function
        return None


def _subset_caller(function: Callable[..., Any], declared: set[str]) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        return function(**{k: v for k, v in kwargs.items() if k in declared})

    return call


def _allowlist() -> set[str] | None:
    raw = os.environ.get("XINF_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}
