"""``xinf catalog import FILE|DIR``: Xinference's own model-family JSON files registered on a server."""

from __future__ import annotations

from pathlib import Path

import click

from xinf.cli.options import client, echo_json, endpoint_option, json_option


@click.group()
def catalog() -> None:
    """Xinference's model catalogues: bring them to xinf."""


@catalog.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--persist/--no-persist", default=True, show_default=True, help="Keep them across restarts.")
@endpoint_option
@json_option
def import_(path: Path, persist: bool, endpoint: str, api_key: str | None, as_json: bool) -> None:
    """Register every entry of Xinference's llm_family.json / model_spec.json files (a file or a directory).

    Entries xinf cannot serve are skipped, each with the reason.
    """
    from xinf import catalog as formats

    http = client(endpoint, api_key)
    imported: list[str] = []
    skipped: list[dict[str, str]] = []
    try:
        entries = formats.read_entries(path)
    except ValueError as exc:
        raise click.ClickException(f"{path} is not Xinference model JSON: {exc}") from None
    for file, entry, hint in entries:
        name = str(entry.get("model_name") or "?") if isinstance(entry, dict) else "?"
        try:
            family = formats.convert(entry, hint, keep_template=False)
        except formats.Skip as exc:
            skipped.append({"model_name": name, "file": str(file), "reason": str(exc)})
            continue
        model_type = family["model_type"]
        try:
            http.post(f"/v1/model_registrations/{model_type}", json={"model": family, "persist": persist})
        except click.ClickException as exc:  # the server's own words: name taken, type not served, ...
            skipped.append({"model_name": name, "file": str(file), "reason": exc.message})
            continue
        imported.append(name)
    if as_json:
        echo_json({"imported": imported, "skipped": skipped})
        return
    for row in skipped:
        click.echo(f"skipped {row['model_name']}: {row['reason']}")
    click.echo(f"imported {len(imported)} model(s), skipped {len(skipped)}" + (" (persisted)" if persist else ""))
