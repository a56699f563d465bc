"""A real ``xinf serve`` process for tests: free port, own home, stopped for sure."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def _stop_with_parent() -> Callable[[], object] | None:
    """What the child runs before exec so it gets SIGTERM when the test process dies, even killed.

    Prepared here, in the parent: between fork and exec the child must not import anything (another
    thread may hold the import lock), only call the ready function.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return functools.partial(ctypes.CDLL("libc.so.6", use_errno=True).prctl, 1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(home) as server: server.url ...``"""

    def __init__(
        self,
        home: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        python: str = sys.executable,
        startup_timeout: float = 60.0,
        host: str = "127.0.0.1",
        command: list[str] | None = None,
    ):
        self.home = Path(home)
        self.port = free_port()
        self.host = host
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self.env = {**os.environ, "XINFERENCE_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args or []
        self.python = python
        # what starts the server, before --host/--port and args (e.g. ["./scripts/serve"], which passes them on)
        self.command = command or [python, "-m", "xinf.cli.main", "serve"]
        self.startup_timeout = startup_timeout
        self.log_path = self.home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=300)
        self.clients: list[Any] = []

    def start(self) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.command, "--host", self.host, "--port", str(self.port), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent(),
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xinf serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # 403: up, but this client is outside XINFERENCE_ALLOWED_IPS
                if httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 403):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"xinf serve did not answer within {self.startup_timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        for client in self.clients:  # their pooled connections would outlive the server
            client.close()
        self.clients.clear()
        self.http.close()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and any replica left
            proc.wait()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples in ``GET /metrics`` whose labels include ``labels`` (0 when none)."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric == name and all(w in rest.rstrip("}").split(",") for w in want):
                total += float(value)
        return total

    def launch(self, **body: Any) -> str:
        """POST /v1/models and return the uid; raises with the server's message on error."""
        response = self.http.post("/v1/models", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"launch failed ({response.status_code}): {response.text}")
        return str(response.json()["model_uid"])

    def openai(self, **kwargs: Any) -> Any:
        import openai

        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0, **kwargs)
        self.clients.append(client)  # closed by stop()
        return client

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
