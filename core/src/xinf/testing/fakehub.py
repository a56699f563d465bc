"""A model hub on 127.0.0.1 for tests: enough of the Hugging Face, CSGHub and ModelScope protocols.

The real client libraries (huggingface_hub, pycsghub, modelscope) talk to it
through their endpoint settings (``HF_ENDPOINT``, ``XINFERENCE_CSG_ENDPOINT``,
``MODELSCOPE_ENDPOINT``).  Files honour ``Range``; ``fail`` scripts faults
per file (a connection cut halfway, an HTTP 500, slow delivery) to prove
retries and resume.  ``requests`` records what was asked.

- Hugging Face: ``GET /api/models/{repo}/revision/{rev}`` (model_info with
  siblings), ``GET|HEAD /{repo}/resolve/{rev}/{path}``.
- CSGHub: the same under ``/csg``.
- ModelScope: ``GET /api/v1/models/{repo}/repo/files`` and
  ``GET /api/v1/models/{repo}/repo?Revision=..&FilePath=..``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """``with FakeHub() as hub: hub.add("org/model", {"a.gguf": b"..."}); hub.url``"""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.authorization: list[str | None] = []  # the Authorization header of each request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = files

    def fail(self, path: str, *actions: str) -> None:
        """Faults for the next GETs of ``path``: "cut" (half the bytes, then close), "500", "slow:SECONDS"."""
        self.faults.setdefault(path, []).extend(actions)

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of a file named ``path`` (None: from the start)."""
        return [
            r for m, p, r in self.requests if m == "GET" and (p.endswith("/" + path) or p.endswith("FilePath=" + path))
        ]

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    """The request handler class of one hub (``ThreadingHTTPServer`` takes a class, not an instance)."""
    return type("Handler", (_HubHandler,), {"hub": hub})


class _HubHandler(BaseHTTPRequestHandler):
    """Routes a request to the protocol it belongs to; ``hub`` is set on the subclass ``_handler`` makes."""

    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.route(head=True)

    def do_GET(self) -> None:
        self.route(head=False)

    def route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.hub.lock:
            query_text = "?" + url.query if url.query else ""
            self.hub.requests.append(("HEAD" if head else "GET", path + query_text, self.headers.get("Range")))
            self.hub.authorization.append(self.headers.get("Authorization"))
        prefix = ""
        if path.startswith("/csg/"):
            prefix, path = "/csg", path[4:]
        if m := re.fullmatch(r"/api/models/(.+?)/revision/([^/]+)", path):
            return self.model_info(m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)", path):
            return self.model_info(m.group(1))
        if m := re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", path):
            return self.file(m.group(1), m.group(3), head, hf=not prefix)
        if m := re.fullmatch(r"/api/v1/models/(.+?)/repo/files", path):
            return self.modelscope_files(m.group(1))
        if m := re.fullmatch(r"/api/v1/models/(.+?)/repo", path):
            return self.file(m.group(1), query.get("FilePath", ""), head, hf=False)
        self.json({"error": f"no route {path}"}, 404)

    def json(self, data: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    # ------------------------------------------------------------ listings

    def model_info(self, repo: str) -> None:
        """Hugging Face's (and CSGHub's) model_info, with the files as siblings."""
        files = self.hub.repos.get(repo)
        if files is None:
            return self.json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for name, data in files.items():
            entry: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": _sha(data)[:40]}
            if len(data) > 1024:
                entry["lfs"] = {"sha256": _sha(data), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        self.json({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings, "private": False})

    def modelscope_files(self, repo: str) -> None:
        files = self.hub.repos.get(repo)
        if files is None:
            return self.json({"Code": 404, "Message": "model not found", "Success": False}, 404)
        entries = [
            {"Name": n.rsplit("/", 1)[-1], "Path": n, "Size": len(d), "Sha256": _sha(d), "Type": "blob"}
            for n, d in files.items()
        ]
        self.json({"Code": 200, "Data": {"Files": entries}, "Success": True})

    # ------------------------------------------------------------ files

    def file(self, repo: str, name: str, head: bool, hf: bool) -> None:
        """One file, from the offset a ``Range`` asks for, with the next fault scripted for it."""
        data = self.hub.repos.get(repo, {}).get(name)
        if data is None:
            return self.json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
        headers = {"ETag": f'"{_sha(data)}"', "Accept-Ranges": "bytes"}
        if hf:
            headers["X-Repo-Commit"] = COMMIT
        fault = None if head else self.next_fault(name)
        if fault == "500":
            return self.json({"error": "injected failure"}, 500)
        start = None if head else self.range_start()
        status = 200
        if start is not None:
            if start >= len(data):
                return self.not_satisfiable(len(data))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start or 0 :]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.send_body(body, fault)

    def next_fault(self, name: str) -> str | None:
        with self.hub.lock:
            queue = self.hub.faults.get(name)
            return queue.pop(0) if queue else None

    def range_start(self) -> int | None:
        """Where a ``Range: bytes=N-`` header asks the file to start; None without one."""
        m = re.fullmatch(r"bytes=(\d+)-", (self.headers.get("Range") or "").strip())
        return int(m.group(1)) if m else None

    def not_satisfiable(self, size: int) -> None:
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_body(self, body: bytes, fault: str | None) -> None:
        """The bytes, as the fault says: "cut" sends half and closes, "slow:S" waits S seconds per 64 KiB."""
        if fault == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        delay = float(fault.split(":", 1)[1]) if fault and fault.startswith("slow:") else 0.0
        step = 65536
        for i in range(0, len(body), step):
            if delay:
                time.sleep(delay)
            try:
                self.wfile.write(body[i : i + step])
            except (BrokenPipeError, ConnectionResetError):
                return
