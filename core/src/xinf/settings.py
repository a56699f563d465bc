"""Every environment variable xinf reads, in one place, with its documented default.

Read once when a server or client starts (``Settings.from_env()``), so a typo
in a value fails at start-up with the variable's name, not on the hundredth
request.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class SettingsError(ValueError):
    pass


LAUNCH_STRATEGIES = ("IDLE_FIRST", "PACK")


class Settings(msgspec.Struct, kw_only=True):
    endpoint: str = "http://127.0.0.1:9997"
    home: Path = Path.home() / ".xinference"
    model_src: str = "huggingface"
    health_check_failure_threshold: int = 5
    health_check_interval: float = 5.0
    health_check_timeout: float = 10.0
    disable_health_check: bool = False
    disable_metrics: bool = False
    download_max_attempts: int = 3
    sse_ping_seconds: float = 600.0
    max_tokens: int | None = None
    allowed_ips: list[str] = msgspec.field(default_factory=list)
    batch_size: int = 32
    batch_interval: float = 0.003
    allow_multi_replica_per_gpu: bool = True
    launch_strategy: str = "IDLE_FIRST"
    enable_virtual_env: bool = True
    virtual_env_skip_installed: bool = True
    csg_token: str | None = None
    csg_endpoint: str = "https://hub-stg.opencsg.com/"
    transformers_enable_batching: bool = True
    text_to_image_batching_size: str | None = None
    api_key: str | None = None
    max_body: int = 32 << 20
    routing: str = "prefix"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        s = cls()
        s.endpoint = env.get("XINFERENCE_ENDPOINT", s.endpoint).rstrip("/")
        if env.get("XINFERENCE_HOME"):
            s.home = Path(env["XINFERENCE_HOME"]).expanduser()
        s.model_src = _choice(env, "XINFERENCE_MODEL_SRC", s.model_src, ("huggingface", "modelscope", "csghub"))
        s.health_check_failure_threshold = _int(env, "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD", 5, 1)
        s.health_check_interval = _float(env, "XINFERENCE_HEALTH_CHECK_INTERVAL", 5.0)
        s.health_check_timeout = _float(env, "XINFERENCE_HEALTH_CHECK_TIMEOUT", 10.0)
        s.disable_health_check = _bool(env, "XINFERENCE_DISABLE_HEALTH_CHECK", False)
        s.disable_metrics = _bool(env, "XINFERENCE_DISABLE_METRICS", False)
        s.download_max_attempts = _int(env, "XINFERENCE_DOWNLOAD_MAX_ATTEMPTS", 3, 1)
        s.sse_ping_seconds = _float(env, "XINFERENCE_SSE_PING_ATTEMPTS_SECONDS", 600.0)
        if env.get("XINFERENCE_MAX_TOKENS"):
            s.max_tokens = _int(env, "XINFERENCE_MAX_TOKENS", 0, 1)
        s.allowed_ips = _networks(env, "XINFERENCE_ALLOWED_IPS")
        s.batch_size = _int(env, "XINFERENCE_BATCH_SIZE", 32, 1)
        s.batch_interval = _float(env, "XINFERENCE_BATCH_INTERVAL", 0.003)
        s.allow_multi_replica_per_gpu = _bool(env, "XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU", True)
        strategy = env.get("XINFERENCE_LAUNCH_STRATEGY", "IDLE_FIRST").strip().upper()
        strategy = strategy.removesuffix("_LAUNCH_STRATEGY")
        if strategy not in LAUNCH_STRATEGIES:
            raise SettingsError(
                f"XINFERENCE_LAUNCH_STRATEGY={env['XINFERENCE_LAUNCH_STRATEGY']!r} is not one of "
                f"{', '.join(LAUNCH_STRATEGIES)}"
            )
        s.launch_strategy = strategy
        s.enable_virtual_env = _bool(env, "XINFERENCE_ENABLE_VIRTUAL_ENV", True)
        s.virtual_env_skip_installed = _bool(env, "XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED", True)
        s.csg_token = env.get("XINFERENCE_CSG_TOKEN") or None
        s.csg_endpoint = env.get("XINFERENCE_CSG_ENDPOINT", s.csg_endpoint)
        s.transformers_enable_batching = _bool(env, "XINFERENCE_TRANSFORMERS_ENABLE_BATCHING", True)
        s.text_to_image_batching_size = env.get("XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE") or None
        s.api_key = env.get("XINF_API_KEY") or None
        s.max_body = _int(env, "XINF_MAX_BODY_BYTES", s.max_body, 1024)
        s.routing = _choice(env, "XINF_ROUTING", s.routing, ("least_busy", "prefix"))
        return s


def _networks(env: dict[str, str], name: str) -> list[str]:
    import ipaddress

    entries = [p.strip() for p in env.get(name, "").replace(";", ",").split(",") if p.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {entry!r} is not an IP address or CIDR block") from None
    return entries


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def _int(env: dict[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must not be negative")
    return value


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() not in choices:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw.strip().lower()
