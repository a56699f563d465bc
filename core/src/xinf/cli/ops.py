"""``xinf cached``, ``xinf remove-cache`` and ``xinf virtualenvs``: what the server keeps on disk."""

from __future__ import annotations

from typing import Any

import click

from xinf.cli.options import client, echo_json, endpoint_option, json_option
from xinf.cli.table import render
from xinf.units import format_bytes


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--model-name", help="Only repositories whose name contains this.")
    @endpoint_option
    @json_option
    def cached(model_name: str | None, endpoint: str, api_key: str | None, as_json: bool) -> None:
        """List downloaded models under the server's XINFERENCE_HOME/cache."""
        params = {"model_name": model_name} if model_name else None
        data = client(endpoint, api_key).get("/v1/cache/models", params=params)["list"]
        if as_json:
            echo_json(data)
            return
        if not data:
            click.echo("nothing downloaded")
            return
        rows = [
            (
                e["model_version"],
                len(e["files"]),
                f"{len(e['partial_files'])} partial" if e["partial_files"] else "complete",
                format_bytes(e["size"]),
                e["in_use"],
                e["path"],
            )
            for e in data
        ]
        click.echo(render(["MODEL VERSION", "FILES", "STATE", "SIZE", "IN USE", "PATH"], rows))

    @cli.command("remove-cache")
    @click.argument("model_version")
    @endpoint_option
    @json_option
    def remove_cache(model_version: str, endpoint: str, api_key: str | None, as_json: bool) -> None:
        """Delete a downloaded model (MODEL_VERSION as listed by `xinf cached`, e.g. huggingface/org/name)."""
        result = client(endpoint, api_key).delete("/v1/cache/models", params={"model_version": model_version})
        if as_json:
            echo_json(result)
            return
        click.echo(f"removed {result['model_version']} ({result['path']})")

    @cli.command()
    @click.option("--remove", "to_remove", metavar="NAME", help="Delete this virtual environment.")
    @endpoint_option
    @json_option
    def virtualenvs(to_remove: str | None, endpoint: str, api_key: str | None, as_json: bool) -> None:
        """List the models' virtual environments (or --remove one)."""
        api = client(endpoint, api_key, timeout=120)
        if to_remove:
            result = api.delete(f"/v1/virtualenvs/{to_remove}")
            if as_json:
                echo_json(result)
                return
            click.echo(f"removed virtual environment {result['name']} ({result['path']})")
            return
        data: list[dict[str, Any]] = api.get("/v1/virtualenvs")["list"]
        if as_json:
            echo_json(data)
            return
        if not data:
            click.echo("no virtual environments")
            return
        rows = [(e["name"], e["packages"], format_bytes(e["size"]), e["in_use"], e["path"]) for e in data]
        click.echo(render(["NAME", "PACKAGES", "SIZE", "IN USE", "PATH"], rows))
