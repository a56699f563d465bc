"""What the client commands share: the endpoint and --json options, the HTTP client, JSON output.

Command modules (``main``, ``ops`` and the rest) import these from here, never from ``main``: ``main``
imports them to register their commands.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"


def endpoint_option(f: Any) -> Any:
    f = click.option(
        "-e",
        "--endpoint",
        default=lambda: os.environ.get("XINFERENCE_ENDPOINT", DEFAULT_ENDPOINT),
        show_default="$XINFERENCE_ENDPOINT or " + DEFAULT_ENDPOINT,
        help="URL of the xinf server.",
    )(f)
    f = click.option(
        "--api-key",
        default=lambda: os.environ.get("XINF_API_KEY"),
        help="API key for a server started with --api-key ($XINF_API_KEY).",
    )(f)
    return f


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def client(endpoint: str, api_key: str | None, timeout: float | None = 30.0) -> Any:
    from xinf.cli.client import Client

    return Client(endpoint, api_key, timeout)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))
