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
    # Trust boundaries and limits (README "Security"); read by _security() below.
    api_keys_file: Path | None = None
    inference_api_keys: list[str] = msgspec.field(default_factory=list)
    forwarded_allow_ips: list[str] = msgspec.field(default_factory=list)
    cors_allow_origins: list[str] = msgspec.field(default_factory=list)
    max_n: int = 16
    max_choices: int = 64
    max_messages: int = 2048
    max_json_depth: int = 64
    max_schema_bytes: int = 16384
    max_schema_enum: int = 256
    stall_timeout: float = 300.0
    request_timeout: float | None = None
    launch_timeout: float = 1800.0
    keepalive_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024
    max_env_bytes: int = 65536
    launch_allow_unsafe_envs: bool = False
    virtual_env_allow_urls: bool = False
    virtual_env_index_url: str | None = None
    virtual_env_find_links: list[str] = msgspec.field(default_factory=list)
    cpu_cores_per_replica: int | None = None  # None: the node's cores divided among a launch's replicas
    # Images in chat (xinf.server.vision)
    max_image_bytes: int = 10 << 20
    max_images: int = 16
    allow_image_urls: bool = False
    image_fetch_timeout: float = 10.0
    warm_pool: int = 1  # idle replica workers per (interpreter, engine); 0: no pool (xinf.warmpool)
    warm_pool_total: int = 2
    warm_pool_engines: list[str] = msgspec.field(default_factory=list)

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
        s.text_to_image_batching_size = _image_size(env, "XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE")
        s.api_key = env.get("XINF_API_KEY") or None
        s.max_body = _int(env, "XINF_MAX_BODY_BYTES", s.max_body, 1024)
        s.routing = _choice(env, "XINF_ROUTING", s.routing, ("least_busy", "prefix"))
        _security(env, s)
        if env.get("XINF_CPU_CORES_PER_REPLICA", "").strip():
            s.cpu_cores_per_replica = _int(env, "XINF_CPU_CORES_PER_REPLICA", 0, 0)
        s.warm_pool = _int(env, "XINF_WARM_POOL", s.warm_pool, 0)
        s.warm_pool_total = _int(env, "XINF_WARM_POOL_TOTAL", s.warm_pool_total, 0)
        s.warm_pool_engines = _list(env, "XINF_WARM_POOL_ENGINES")
        _int(env, "XINF_SIMULATED_CPU_CORES", 1, 1)  # read by the inventory; checked here so a typo stops start-up
        if env.get("XINF_SIMULATED_HOST_MEMORY", "").strip():
            from xinf.units import parse_size

            try:
                parse_size(env["XINF_SIMULATED_HOST_MEMORY"])
            except ValueError as exc:
                raise SettingsError(f"XINF_SIMULATED_HOST_MEMORY: {exc}") from None
        return s


def _security(env: dict[str, str], s: Settings) -> None:
    """Keys, trusted proxies, browser origins and every request, launch and connection limit."""
    if env.get("XINF_API_KEYS_FILE"):
        s.api_keys_file = Path(env["XINF_API_KEYS_FILE"]).expanduser()
    s.inference_api_keys = _list(env, "XINF_INFERENCE_API_KEYS")
    s.forwarded_allow_ips = _list(env, "XINF_FORWARDED_ALLOW_IPS")
    s.cors_allow_origins = _list(env, "XINF_CORS_ALLOW_ORIGINS")
    s.max_n = _int(env, "XINF_MAX_N", s.max_n, 1)
    s.max_choices = _int(env, "XINF_MAX_CHOICES", s.max_choices, 1)
    s.max_messages = _int(env, "XINF_MAX_MESSAGES", s.max_messages, 1)
    s.max_json_depth = _int(env, "XINF_MAX_JSON_DEPTH", s.max_json_depth, 4)
    s.max_schema_bytes = _int(env, "XINF_MAX_SCHEMA_BYTES", s.max_schema_bytes, 256)
    s.max_schema_enum = _int(env, "XINF_MAX_SCHEMA_ENUM", s.max_schema_enum, 1)
    s.stall_timeout = _float(env, "XINF_STALL_TIMEOUT", s.stall_timeout)
    if env.get("XINF_REQUEST_TIMEOUT"):
        s.request_timeout = _float(env, "XINF_REQUEST_TIMEOUT", 0.0) or None
    s.launch_timeout = _float(env, "XINF_LAUNCH_TIMEOUT", s.launch_timeout)
    s.keepalive_timeout = _float(env, "XINF_KEEPALIVE_TIMEOUT", s.keepalive_timeout)
    s.header_timeout = _float(env, "XINF_HEADER_TIMEOUT", s.header_timeout)
    s.body_timeout = _float(env, "XINF_BODY_TIMEOUT", s.body_timeout)
    s.max_connections = _int(env, "XINF_MAX_CONNECTIONS", s.max_connections, 1)
    s.max_env_bytes = _int(env, "XINF_MAX_ENV_BYTES", s.max_env_bytes, 256)
    s.launch_allow_unsafe_envs = _bool(env, "XINF_LAUNCH_ALLOW_UNSAFE_ENVS", False)
    s.virtual_env_allow_urls = _bool(env, "XINF_VIRTUAL_ENV_ALLOW_URLS", False)
    s.virtual_env_index_url = env.get("XINF_VIRTUAL_ENV_INDEX_URL") or None
    s.virtual_env_find_links = _list(env, "XINF_VIRTUAL_ENV_FIND_LINKS")
    s.max_image_bytes = _int(env, "XINF_MAX_IMAGE_BYTES", s.max_image_bytes, 1024)
    s.max_images = _int(env, "XINF_MAX_IMAGES", s.max_images, 1)
    s.allow_image_urls = _bool(env, "XINF_ALLOW_IMAGE_URLS", False)
    s.image_fetch_timeout = _float(env, "XINF_IMAGE_FETCH_TIMEOUT", s.image_fetch_timeout)


def _list(env: dict[str, str], name: str) -> list[str]:
    return [p.strip() for p in env.get(name, "").split(",") if p.strip()]


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


def _image_size(env: dict[str, str], name: str) -> str | None:
    """``1024*1024`` (Xinference's form; ``1024x1024`` too), kept as written; unset -> None."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    sides = raw.lower().replace("x", "*").split("*")
    if len(sides) != 2 or not all(side.strip().isdigit() and int(side) > 0 for side in sides):
        raise SettingsError(f"{name}={raw!r} is not an image size such as 1024*1024")
    return raw


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() not in choices:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw.strip().lower()
