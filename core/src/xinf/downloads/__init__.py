"""Downloading models from a hub into ``XINFERENCE_HOME/cache``.

``fetch`` lists the repository with the hub's client library, keeps only the
files the launch needs (``select``), and transfers each one with resume and
``XINFERENCE_DOWNLOAD_MAX_ATTEMPTS`` tries (``transfer``).  A ``Download``
carries the progress the HTTP API reports and the cancel flag it sets.

Layout: ``cache/<hub>/<org>--<name>/<files as in the repository>`` plus
``.xinf-download.json`` recording what was fetched, so a second launch of
the same files needs no network at all.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec

from xinf.downloads import hubs, select
from xinf.downloads.transfer import Cancelled, Counter, TransferError, fetch_file, partial_size
from xinf.errors import Conflict, HubUnavailable, LaunchError, NotFound
from xinf.settings import Settings
from xinf.storage import atomic_write
from xinf.types import ModelSpec

log = logging.getLogger(__name__)
HUBS = ("huggingface", "modelscope", "csghub")
RECORD = ".xinf-download.json"


class LaunchCancelled(LaunchError):
    """The launch was cancelled (``POST /v1/models/{uid}/cancel``)."""


class Download:
    """One launch's download: what it fetches, how far it got, and its cancel flag."""

    def __init__(self) -> None:
        self.counter = Counter()
        self.hub: str | None = None
        self.repo: str | None = None
        self.active = False
        self.attempt = 0

    def cancel(self) -> None:
        self.counter.cancel.set()

    @property
    def cancelled(self) -> bool:
        return self.counter.cancel.is_set()

    def describe(self) -> dict[str, Any]:
        c = self.counter
        return {
            "downloading": self.active,
            "hub": self.hub,
            "repository": self.repo,
            "file": c.file or None,
            "downloaded_bytes": c.done,
            "total_bytes": c.total,
            "attempt": self.attempt,
        }

    @property
    def fraction(self) -> float:
        c = self.counter
        return min(1.0, c.done / c.total) if c.total else 0.0


def cache_root(settings: Settings) -> Path:
    return settings.home / "cache"


def repo_dir(settings: Settings, hub: str, repo: str) -> Path:
    return cache_root(settings) / hub / repo.replace("/", "--")


def choose_hub(spec: ModelSpec, settings: Settings, requested: str | None) -> tuple[str, str]:
    """The hub to download from: the launch's ``download_hub``, else XINFERENCE_MODEL_SRC, else any that has it."""
    src = spec.source
    if requested is not None:
        repo = getattr(src, requested, None)
        if not repo:
            have = [h for h in HUBS if getattr(src, h)]
            raise LaunchError(
                f"{spec.name} ({spec.format}, {spec.quantization}) has no {requested} repository "
                f"(it has: {', '.join(have) or 'none'})",
                param="download_hub",
            )
        return requested, repo
    for hub in (settings.model_src, *HUBS):
        repo = getattr(src, hub, None)
        if repo:
            return hub, repo
    raise LaunchError(f"{spec.name} has no local path and no hub repository to download it from")


def fetch(spec: ModelSpec, settings: Settings, requested_hub: str | None = None, job: Download | None = None) -> str:
    """Download what ``spec`` needs and return its local path (a file for GGUF, else the directory)."""
    job = job or Download()
    hub, repo = choose_hub(spec, settings, requested_hub)
    job.hub, job.repo = hub, repo
    root = repo_dir(settings, hub, repo)
    key = f"{spec.format}:{spec.quantization}:{spec.source.file or ''}"
    if spec.source.projector:  # a GGUF vision model's projector is part of the set
        key += f":{spec.source.projector}"
    record = _read_record(root)
    cached = record.get("sets", {}).get(key)
    if cached and all((root / p).is_file() for p in cached):
        return _result(root, cached, spec)  # downloaded before: no network needed

    attempts = settings.download_max_attempts
    job.active = True
    try:
        try:
            # ModelScope's SDK already retries a listing four times with backoff (~9 s offline): retrying
            # that again would keep a user waiting half a minute for a hub that is unreachable.
            tries = 1 if hub == "modelscope" else attempts
            listing = _try(lambda: hubs.LIST[hub](repo, None, settings), tries, job, f"list {repo} on {hub}")
        except ImportError as exc:
            extra = {"huggingface": "huggingface_hub", "modelscope": "'xinf[modelscope]'", "csghub": "'xinf[csghub]'"}
            raise LaunchError(f"downloading from {hub} needs {exc.name}: pip install {extra[hub]}") from None
        wanted = select.select([f.path for f in listing.files], spec)
        files = [f for f in listing.files if f.path in wanted]
        counter = job.counter
        counter.total = sum(f.size or 0 for f in files)
        counter.done = sum(partial_size(root / f.path) for f in files)
        log.info("downloading %d file(s) of %s from %s into %s", len(files), repo, hub, root)
        import httpx

        timeout = httpx.Timeout(30.0, read=120.0)
        with httpx.Client(follow_redirects=True, timeout=timeout, trust_env=True) as client:
            for f in files:
                counter.file = f.path
                target = root / f.path

                def one(f: hubs.RemoteFile = f, target: Path = target) -> None:
                    fetch_file(client, f.url, f.headers, target, f.size, f.sha256, counter)

                _try(one, attempts, job, f"download {f.path} of {repo} from {hub}")
    finally:
        job.active = False
    record.update({"hub": hub, "repository": repo, "revision": listing.revision})
    record.setdefault("sets", {})[key] = wanted
    record["files"] = sorted(set(record.get("files", [])) | set(wanted))
    record["downloaded_at"] = int(time.time())
    atomic_write(root / RECORD, msgspec.json.encode(record))
    return _result(root, wanted, spec)


def _result(root: Path, paths: list[str], spec: ModelSpec) -> str:
    if spec.source.file:
        return str(root / spec.source.file)
    weights = [p for p in paths if p != spec.source.projector]
    if spec.format == "ggufv2" and len(weights) == 1:
        return str(root / weights[0])
    return str(root)


def _try(work: Any, attempts: int, job: Download, what: str) -> Any:
    """``work()`` up to ``attempts`` times; a partial file is resumed by the next try."""
    for attempt in range(1, attempts + 1):
        job.attempt = attempt
        if job.cancelled:
            raise LaunchCancelled("the launch was cancelled while downloading", code="cancelled")
        try:
            return work()
        except Cancelled:
            raise LaunchCancelled("the launch was cancelled while downloading", code="cancelled") from None
        except (LaunchError, ImportError):
            raise
        except Exception as exc:
            retry, message = _classify(exc)
            if not retry:
                raise LaunchError(f"could not {what}: {message}") from None
            if attempt == attempts:
                raise HubUnavailable(
                    f"could not {what} after {attempt} attempt(s): {message}. The hub may be unreachable from "
                    "this server: launch with --model-path pointing to a local copy, or choose another hub "
                    "(--download-hub, $XINFERENCE_MODEL_SRC)"
                ) from None
            delay = min(10.0, 0.5 * 2 ** (attempt - 1))
            log.warning("could not %s (attempt %d/%d): %s; retrying in %.1fs", what, attempt, attempts, message, delay)
            if job.counter.cancel.wait(delay):
                raise LaunchCancelled("the launch was cancelled while downloading", code="cancelled") from None
    raise AssertionError("unreachable")


def _classify(exc: Exception) -> tuple[bool, str]:
    """Whether another try may succeed, and a one-line reason."""
    if isinstance(exc, TransferError):
        return exc.retry, str(exc)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return False, message
    return True, message


def _read_record(root: Path) -> dict[str, Any]:
    try:
        data = msgspec.json.decode((root / RECORD).read_bytes())
    except (OSError, msgspec.DecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the cache


def cached(settings: Settings) -> list[dict[str, Any]]:
    """Every downloaded repository: hub, repository, path, files, bytes on disk, partial files."""
    out = []
    base = cache_root(settings)
    for record_path in sorted(base.glob(f"*/*/{RECORD}")):
        root = record_path.parent
        record = _read_record(root)
        files = [p for p in root.rglob("*") if p.is_file() and p.name != RECORD]
        out.append(
            {
                "model_version": f"{root.parent.name}/{record.get('repository', root.name)}",
                "hub": root.parent.name,
                "repository": record.get("repository", root.name.replace("--", "/")),
                "revision": record.get("revision"),
                "path": str(root),
                "files": sorted(str(p.relative_to(root)) for p in files if not p.name.endswith(".partial")),
                "partial_files": sorted(str(p.relative_to(root)) for p in files if p.name.endswith(".partial")),
                "size": sum(p.stat().st_size for p in files),
            }
        )
    # A download interrupted before it finished has no record yet; list it too.
    recorded = {o["path"] for o in out}
    for root in sorted(p for p in base.glob("*/*") if p.is_dir() and str(p) not in recorded):
        files = [p for p in root.rglob("*") if p.is_file()]
        out.append(
            {
                "model_version": f"{root.parent.name}/{root.name.replace('--', '/')}",
                "hub": root.parent.name,
                "repository": root.name.replace("--", "/"),
                "revision": None,
                "path": str(root),
                "files": sorted(str(p.relative_to(root)) for p in files if not p.name.endswith(".partial")),
                "partial_files": sorted(str(p.relative_to(root)) for p in files if p.name.endswith(".partial")),
                "size": sum(p.stat().st_size for p in files),
            }
        )
    return out


def find(settings: Settings, model_version: str) -> dict[str, Any]:
    """A cached repository by ``hub/org/name`` (or ``org/name`` when only one hub has it)."""
    entries = cached(settings)
    matches = [e for e in entries if model_version in (e["model_version"], e["repository"])]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        have = ", ".join(e["model_version"] for e in entries) or "nothing"
        raise NotFound(f"{model_version!r} is not in the cache (cached: {have})", param="model_version")
    raise Conflict(f"{model_version!r} is cached from several hubs; name one: hub/org/name", param="model_version")


def remove(settings: Settings, model_version: str, in_use: list[str]) -> dict[str, Any]:
    """Delete a cached repository unless a running model uses its files."""
    entry = find(settings, model_version)
    root = entry["path"]
    users = [p for p in in_use if p == root or p.startswith(root + "/")]
    if users:
        raise Conflict(f"{entry['model_version']} is in use by a running model; terminate it first")
    shutil.rmtree(root)
    return entry
