"""``xinf launch`` while a model downloads: a progress bar, and Ctrl-C cancels the launch."""

from __future__ import annotations

import sys
import threading
from typing import Any

import click

from xinf.cli.client import ApiError, Client
from xinf.units import format_bytes

WIDTH = 30


def launch_with_progress(api: Client, poll: Client, body: dict[str, Any], uid: str | None) -> dict[str, Any]:
    """POST the launch in a thread; meanwhile draw the download's progress from /progress."""
    outcome: dict[str, Any] = {}

    def post() -> None:
        try:
            outcome["result"] = api.post("/v1/models", json=body)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    drawn = False
    try:
        while worker.is_alive():
            worker.join(0.25)
            if uid is None or not worker.is_alive():
                continue
            try:
                info = poll.get(f"/v1/models/{uid}/progress")
            except ApiError:
                continue  # not registered yet, or already gone
            if info.get("downloading") and info.get("total_bytes"):
                click.echo("\r" + bar(info), nl=False, err=True)
                drawn = True
    except KeyboardInterrupt:
        if uid is not None:
            try:
                poll.post(f"/v1/models/{uid}/cancel")
                click.echo(f"\ncancelled the launch of {uid}", err=True)
            except ApiError as exc:
                click.echo(f"\ncould not cancel {uid}: {exc.message}", err=True)
        sys.exit(130)
    if drawn:
        click.echo(
            "\r" + bar({**info, "downloaded_bytes": info["total_bytes"]}) if "error" not in outcome else "", err=True
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]


def bar(info: dict[str, Any]) -> str:
    done, total = info["downloaded_bytes"], info["total_bytes"]
    fraction = min(1.0, done / total) if total else 0.0
    filled = int(fraction * WIDTH)
    return (
        f"downloading {info.get('repository')} from {info.get('hub')} "
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction * 100:5.1f}% {format_bytes(done)} / {format_bytes(total)}"
    )
