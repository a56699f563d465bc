"""The web page: ``/`` and its assets under ``/web/``, served from files shipped in the package."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent.parent / "web"

# The page loads only its own files and talks only to this server; nothing inline, no frames. Generated images
# come back as data: URLs and synthesised speech plays from a blob: URL.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


async def page(request: Request) -> Response:
    return FileResponse(ASSETS / "index.html", headers=HEADERS)


class Assets(StaticFiles):
    """The page's scripts and styles, revalidated on every load (a 304 when unchanged).

    Without ``no-cache`` a browser may keep last version's scripts for hours after
    an upgrade and pair them with the new page.
    """

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        response.headers["x-content-type-options"] = "nosniff"
        return response


def routes() -> list[Route | Mount]:
    """Open without an API key (see ``access.OPEN_PATHS``): the page asks for the key itself."""
    return [
        Route("/", page, methods=["GET"]),
        Mount("/web", Assets(directory=ASSETS), name="web"),
    ]
