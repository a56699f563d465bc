"""The README's commands work as written, in the order shown, after its two set-up commands.

The "Using it" block runs line by line in one bash session against a server started the README's way
(`./scripts/serve`); every other `xinf` line in the README's code blocks must at least parse as a real command with
real options (those need a GPU cluster, a hub or minutes of benchmarks).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest

from xinf.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def bash_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(the heading above it, its lines) for each ```bash block."""
    blocks = []
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].strip() == "```bash":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            blocks.append((heading, lines[i + 1 : j]))
            i = j
        i += 1
    return blocks


def commands(lines: list[str]) -> list[str]:
    """Lines with a command (comment-only and blank lines dropped; continued lines joined)."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if pending:
            line = pending + " " + line.strip()
            pending = ""
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1]
            continue
        if line.strip() and not line.strip().startswith("#"):
            out.append(line)
    return out


def test_the_using_it_block_runs_as_written(tmp_path: Path) -> None:
    block = next(lines for heading, lines in bash_blocks(README) if heading == "Using it")
    lines = commands(block)
    assert lines[0].startswith(". .venv/bin/activate")
    script = ["set -u"]
    for n, line in enumerate(lines, 1):
        quoted = shlex.quote(line)
        script.append(f"echo {shlex.quote(f'+ {line}')}")
        script.append(f"eval {quoted} || {{ echo 'README line {n} failed with exit '$?': '{quoted} >&2; exit 1; }}")
    home = tmp_path / "home"
    server = ServerProcess(home, command=[str(ROOT / "scripts" / "serve")], startup_timeout=600)
    with server:
        # scripts/serve launches the default model once serving; the block starts where the Quick start leaves off
        ready = server.http.get("/v1/models/smollm2-instruct")
        deadline = 120
        while ready.status_code != 200 or ready.json().get("status") != "ready":
            assert deadline > 0, f"smollm2-instruct did not get ready:\n{server.log()}"
            deadline -= 1
            subprocess.run(["sleep", "1"])
            ready = server.http.get("/v1/models/smollm2-instruct")
        result = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=ROOT,
            env={**server.env, "XINFERENCE_ENDPOINT": server.url, "XINFERENCE_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{result.stderr[-3000:]}\n--- stdout:\n{result.stdout[-3000:]}"
        assert "smollm2-instruct" in result.stdout  # the first `xinf list` showed the Quick start's model
        models = server.http.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["smollm2-instruct"]  # the block cleaned up what it launched


def test_every_xinf_line_in_the_readme_parses(tmp_path: Path) -> None:
    from xinf.cli.main import cli

    seen = 0
    for _, block in bash_blocks(README):
        for line in commands(block):
            words = shlex.split(line, comments=True)
            words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # leading VAR=value
            if not words or Path(words[0]).name != "xinf":
                continue
            args = [w for w in words[1:] if w not in ("&",)]
            seen += 1
            try:
                ctx = cli.make_context("xinf", list(args))
                name, sub, rest = cli.resolve_command(ctx, list(args))
                assert sub is not None, line
                sub.make_context(name or "", rest, parent=ctx)
            except click.UsageError as exc:
                pytest.fail(f"README line {line!r} does not parse: {exc}")
    assert seen >= 20
