"""Every environment variable: its documented default, its parsing, and its row in the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from xinf.settings import Settings, SettingsError
from xinf.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SEED_002 = [  # the variables Xinference documents (shared/seeds/002)
    "XINFERENCE_ENDPOINT",
    "XINFERENCE_MODEL_SRC",
    "XINFERENCE_HOME",
    "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD",
    "XINFERENCE_HEALTH_CHECK_INTERVAL",
    "XINFERENCE_HEALTH_CHECK_TIMEOUT",
    "XINFERENCE_DISABLE_HEALTH_CHECK",
    "XINFERENCE_DISABLE_METRICS",
    "XINFERENCE_DOWNLOAD_MAX_ATTEMPTS",
    "XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE",
    "XINFERENCE_SSE_PING_ATTEMPTS_SECONDS",
    "XINFERENCE_MAX_TOKENS",
    "XINFERENCE_ALLOWED_IPS",
    "XINFERENCE_BATCH_SIZE",
    "XINFERENCE_BATCH_INTERVAL",
    "XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU",
    "XINFERENCE_LAUNCH_STRATEGY",
    "XINFERENCE_ENABLE_VIRTUAL_ENV",
    "XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED",
    "XINFERENCE_CSG_TOKEN",
    "XINFERENCE_CSG_ENDPOINT",
]


def readme_table() -> dict[str, str]:
    """variable -> default column of the README's table."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `((?:XINF|XINFERENCE)_[A-Z0-9_]+)` \| (.+?) \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_variable_read_anywhere_is_in_the_readme() -> None:
    read = set()
    for path in (ROOT / "core" / "src" / "xinf").rglob("*.py"):
        read |= set(re.findall(r'"((?:XINF|XINFERENCE)_[A-Z0-9_]+)"', path.read_text()))
    table = readme_table()
    assert read - set(table) == set()
    assert set(SEED_002) - set(table) == set()


def test_documented_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({})
    table = readme_table()
    expected = {
        "XINFERENCE_ENDPOINT": (s.endpoint, "http://127.0.0.1:9997"),
        "XINFERENCE_HOME": (s.home, Path.home() / ".xinference"),
        "XINFERENCE_MODEL_SRC": (s.model_src, "huggingface"),
        "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD": (s.health_check_failure_threshold, 5),
        "XINFERENCE_HEALTH_CHECK_INTERVAL": (s.health_check_interval, 5),
        "XINFERENCE_HEALTH_CHECK_TIMEOUT": (s.health_check_timeout, 10),
        "XINFERENCE_DISABLE_HEALTH_CHECK": (s.disable_health_check, False),
        "XINFERENCE_DISABLE_METRICS": (s.disable_metrics, False),
        "XINFERENCE_DOWNLOAD_MAX_ATTEMPTS": (s.download_max_attempts, 3),
        "XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE": (s.text_to_image_batching_size, None),
        "XINFERENCE_SSE_PING_ATTEMPTS_SECONDS": (s.sse_ping_seconds, 600),
        "XINFERENCE_MAX_TOKENS": (s.max_tokens, None),
        "XINFERENCE_ALLOWED_IPS": (s.allowed_ips, []),
        "XINFERENCE_BATCH_SIZE": (s.batch_size, 32),
        "XINFERENCE_BATCH_INTERVAL": (s.batch_interval, 0.003),
        "XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU": (s.allow_multi_replica_per_gpu, True),
        "XINFERENCE_LAUNCH_STRATEGY": (s.launch_strategy, "IDLE_FIRST"),
        "XINFERENCE_ENABLE_VIRTUAL_ENV": (s.enable_virtual_env, True),
        "XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED": (s.virtual_env_skip_installed, True),
        "XINFERENCE_CSG_TOKEN": (s.csg_token, None),
        "XINFERENCE_CSG_ENDPOINT": (s.csg_endpoint, "https://hub-stg.opencsg.com/"),
        "XINFERENCE_TRANSFORMERS_ENABLE_BATCHING": (s.transformers_enable_batching, True),
        "XINF_API_KEY": (s.api_key, None),
        "XINF_MAX_BODY_BYTES": (s.max_body, 32 << 20),
        "XINF_API_KEYS_FILE": (s.api_keys_file, None),
        "XINF_INFERENCE_API_KEYS": (s.inference_api_keys, []),
        "XINF_FORWARDED_ALLOW_IPS": (s.forwarded_allow_ips, []),
        "XINF_CORS_ALLOW_ORIGINS": (s.cors_allow_origins, []),
        "XINF_MAX_N": (s.max_n, 16),
        "XINF_MAX_CHOICES": (s.max_choices, 64),
        "XINF_MAX_MESSAGES": (s.max_messages, 2048),
        "XINF_MAX_JSON_DEPTH": (s.max_json_depth, 64),
        "XINF_MAX_SCHEMA_BYTES": (s.max_schema_bytes, 16384),
        "XINF_MAX_SCHEMA_ENUM": (s.max_schema_enum, 256),
        "XINF_STALL_TIMEOUT": (s.stall_timeout, 300),
        "XINF_REQUEST_TIMEOUT": (s.request_timeout, None),
        "XINF_LAUNCH_TIMEOUT": (s.launch_timeout, 1800),
        "XINF_KEEPALIVE_TIMEOUT": (s.keepalive_timeout, 5),
        "XINF_HEADER_TIMEOUT": (s.header_timeout, 10),
        "XINF_BODY_TIMEOUT": (s.body_timeout, 30),
        "XINF_MAX_CONNECTIONS": (s.max_connections, 1024),
        "XINF_MAX_ENV_BYTES": (s.max_env_bytes, 65536),
        "XINF_LAUNCH_ALLOW_UNSAFE_ENVS": (s.launch_allow_unsafe_envs, False),
        "XINF_VIRTUAL_ENV_ALLOW_URLS": (s.virtual_env_allow_urls, False),
        "XINF_VIRTUAL_ENV_INDEX_URL": (s.virtual_env_index_url, None),
        "XINF_VIRTUAL_ENV_FIND_LINKS": (s.virtual_env_find_links, []),
        "XINF_CPU_CORES_PER_REPLICA": (s.cpu_cores_per_replica, None),
        "XINF_MAX_IMAGE_BYTES": (s.max_image_bytes, 10 << 20),
        "XINF_MAX_IMAGES": (s.max_images, 16),
        "XINF_ALLOW_IMAGE_URLS": (s.allow_image_urls, False),
        "XINF_IMAGE_FETCH_TIMEOUT": (s.image_fetch_timeout, 10),
    }
    for name, (value, default) in expected.items():
        assert value == default, name
        documented = table[name].strip("`")
        if default is None or default == []:
            assert documented.startswith("unset"), name
        elif isinstance(default, bool):
            assert documented == ("1" if default else "0"), name
        elif name != "XINFERENCE_HOME":
            assert documented == str(default), name


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("XINFERENCE_ENDPOINT", "http://10.0.0.1:9000/", "endpoint", "http://10.0.0.1:9000"),
        ("XINFERENCE_HOME", "/srv/xinf", "home", Path("/srv/xinf")),
        ("XINFERENCE_MODEL_SRC", "ModelScope", "model_src", "modelscope"),
        ("XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD", "2", "health_check_failure_threshold", 2),
        ("XINFERENCE_HEALTH_CHECK_INTERVAL", "0.5", "health_check_interval", 0.5),
        ("XINFERENCE_HEALTH_CHECK_TIMEOUT", "1.5", "health_check_timeout", 1.5),
        ("XINFERENCE_DISABLE_HEALTH_CHECK", "1", "disable_health_check", True),
        ("XINFERENCE_DISABLE_METRICS", "true", "disable_metrics", True),
        ("XINFERENCE_DOWNLOAD_MAX_ATTEMPTS", "7", "download_max_attempts", 7),
        ("XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE", "1024*1024", "text_to_image_batching_size", "1024*1024"),
        ("XINFERENCE_SSE_PING_ATTEMPTS_SECONDS", "15", "sse_ping_seconds", 15.0),
        ("XINFERENCE_MAX_TOKENS", "256", "max_tokens", 256),
        ("XINFERENCE_ALLOWED_IPS", "10.0.0.0/8, ::1", "allowed_ips", ["10.0.0.0/8", "::1"]),
        ("XINFERENCE_BATCH_SIZE", "8", "batch_size", 8),
        ("XINFERENCE_BATCH_INTERVAL", "0.01", "batch_interval", 0.01),
        ("XINFERENCE_ALLOW_MULTI_REPLICA_PER_GPU", "0", "allow_multi_replica_per_gpu", False),
        ("XINFERENCE_LAUNCH_STRATEGY", "IDLE_FIRST_LAUNCH_STRATEGY", "launch_strategy", "IDLE_FIRST"),
        ("XINFERENCE_LAUNCH_STRATEGY", "pack", "launch_strategy", "PACK"),
        ("XINFERENCE_ENABLE_VIRTUAL_ENV", "0", "enable_virtual_env", False),
        ("XINFERENCE_VIRTUAL_ENV_SKIP_INSTALLED", "0", "virtual_env_skip_installed", False),
        ("XINFERENCE_CSG_TOKEN", "tok", "csg_token", "tok"),
        ("XINFERENCE_CSG_ENDPOINT", "http://csg.local", "csg_endpoint", "http://csg.local"),
        ("XINFERENCE_TRANSFORMERS_ENABLE_BATCHING", "0", "transformers_enable_batching", False),
        ("XINF_API_KEY", "k", "api_key", "k"),
        ("XINF_MAX_BODY_BYTES", "4096", "max_body", 4096),
        ("XINF_API_KEYS_FILE", "/etc/xinf/keys", "api_keys_file", Path("/etc/xinf/keys")),
        ("XINF_INFERENCE_API_KEYS", "a, b", "inference_api_keys", ["a", "b"]),
        ("XINF_FORWARDED_ALLOW_IPS", "127.0.0.1,10.0.0.2", "forwarded_allow_ips", ["127.0.0.1", "10.0.0.2"]),
        ("XINF_CORS_ALLOW_ORIGINS", "*", "cors_allow_origins", ["*"]),
        ("XINF_MAX_N", "4", "max_n", 4),
        ("XINF_MAX_CHOICES", "8", "max_choices", 8),
        ("XINF_MAX_MESSAGES", "10", "max_messages", 10),
        ("XINF_MAX_JSON_DEPTH", "16", "max_json_depth", 16),
        ("XINF_MAX_SCHEMA_BYTES", "4096", "max_schema_bytes", 4096),
        ("XINF_MAX_SCHEMA_ENUM", "32", "max_schema_enum", 32),
        ("XINF_STALL_TIMEOUT", "0", "stall_timeout", 0.0),
        ("XINF_REQUEST_TIMEOUT", "60", "request_timeout", 60.0),
        ("XINF_LAUNCH_TIMEOUT", "90", "launch_timeout", 90.0),
        ("XINF_KEEPALIVE_TIMEOUT", "2", "keepalive_timeout", 2.0),
        ("XINF_HEADER_TIMEOUT", "3", "header_timeout", 3.0),
        ("XINF_BODY_TIMEOUT", "4", "body_timeout", 4.0),
        ("XINF_MAX_CONNECTIONS", "100", "max_connections", 100),
        ("XINF_MAX_ENV_BYTES", "1024", "max_env_bytes", 1024),
        ("XINF_LAUNCH_ALLOW_UNSAFE_ENVS", "1", "launch_allow_unsafe_envs", True),
        ("XINF_VIRTUAL_ENV_ALLOW_URLS", "1", "virtual_env_allow_urls", True),
        ("XINF_VIRTUAL_ENV_INDEX_URL", "http://pypi.local/simple", "virtual_env_index_url", "http://pypi.local/simple"),
        ("XINF_VIRTUAL_ENV_FIND_LINKS", "/wheels", "virtual_env_find_links", ["/wheels"]),
        ("XINF_CPU_CORES_PER_REPLICA", "2", "cpu_cores_per_replica", 2),
        ("XINF_CPU_CORES_PER_REPLICA", "0", "cpu_cores_per_replica", 0),
        ("XINF_MAX_IMAGE_BYTES", "65536", "max_image_bytes", 65536),
        ("XINF_MAX_IMAGES", "2", "max_images", 2),
        ("XINF_ALLOW_IMAGE_URLS", "1", "allow_image_urls", True),
        ("XINF_IMAGE_FETCH_TIMEOUT", "2.5", "image_fetch_timeout", 2.5),
    ],
)
def test_each_variable_is_read(name: str, raw: str, field: str, value: object) -> None:
    assert getattr(Settings.from_env({name: raw}), field) == value


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        (
            "XINFERENCE_MODEL_SRC",
            "github",
            "XINFERENCE_MODEL_SRC='github' is not one of huggingface, modelscope, csghub",
        ),
        ("XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD", "0", "must be at least 1"),
        ("XINFERENCE_HEALTH_CHECK_INTERVAL", "soon", "XINFERENCE_HEALTH_CHECK_INTERVAL='soon' is not a number"),
        ("XINFERENCE_DISABLE_METRICS", "maybe", "XINFERENCE_DISABLE_METRICS='maybe' is not a boolean"),
        ("XINFERENCE_DOWNLOAD_MAX_ATTEMPTS", "0", "XINFERENCE_DOWNLOAD_MAX_ATTEMPTS='0' must be at least 1"),
        ("XINFERENCE_MAX_TOKENS", "-5", "XINFERENCE_MAX_TOKENS='-5' must be at least 1"),
        ("XINFERENCE_LAUNCH_STRATEGY", "RANDOM", "XINFERENCE_LAUNCH_STRATEGY='RANDOM' is not one of"),
        ("XINF_MAX_BODY_BYTES", "10", "XINF_MAX_BODY_BYTES='10' must be at least 1024"),
        (
            "XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE",
            "large",
            "XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE='large' is not an image size such as 1024*1024",
        ),
        ("XINF_CPU_CORES_PER_REPLICA", "-1", "XINF_CPU_CORES_PER_REPLICA='-1' must be at least 0"),
        ("XINF_SIMULATED_CPU_CORES", "0", "XINF_SIMULATED_CPU_CORES='0' must be at least 1"),
        ("XINF_SIMULATED_HOST_MEMORY", "lots", "XINF_SIMULATED_HOST_MEMORY: not a size: 'lots'"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: raw})
    assert message in str(info.value)


def test_cli_follows_xinference_endpoint(server: ServerProcess) -> None:
    import os

    out = subprocess.run(
        [sys.executable, "-m", "xinf.cli.main", "list"],
        env={**os.environ, "XINFERENCE_ENDPOINT": server.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "no models running"


def test_home_holds_the_replica_logs(server: ServerProcess) -> None:
    server.launch(model_name="xinf-test-chat", model_uid="logged")
    log = server.home / "logs" / "models" / "logged" / "replica-0.log"
    assert "replica ready: xinf-test-chat on engine test" in log.read_text()
